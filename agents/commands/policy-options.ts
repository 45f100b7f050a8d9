/** The plan options `migrate` and `evacuate` share, and the policy they make with the config's defaults. */
import { Option, type Command } from "commander";
import type { HostConfig } from "../../lib/config/schema";
import { TeleportError } from "../../lib/errors";
import { COMPRESS_CHOICES, type CompressChoice } from "../../lib/plan/compress";
import { DEDUP_CHOICES, type DedupChoice } from "../../lib/plan/dedup";
import { CONVERGENCE, ON_ERROR, STRATEGIES, type Convergence, type Policy } from "../../nrdl/types";

export interface PolicyOptions {
  strategy?: Policy["strategy"];
  maxParallel?: string;
  bandwidthMbps?: string;
  downtimeLimitMs?: string;
  timeoutS?: string;
  onError?: Policy["onError"];
  convergence?: Convergence;
}

function num(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0)
    throw new TeleportError(400, "invalid option", [`--${name} expects a non-negative number, got "${v}"`]);
  return n;
}

export function withPolicyOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option("--strategy <s>", "sequential | parallel | switchover").choices([...STRATEGIES]))
    .option("--max-parallel <n>", "at most n migrations at once (parallel)")
    .option("--bandwidth-mbps <n>", "cap each migration's bandwidth (0 = unlimited)")
    .option("--downtime-limit-ms <n>", "the longest pause QEMU may take at switchover")
    .option("--timeout-s <n>", "give up on a VM that has not moved in n seconds (it keeps running here)")
    .addOption(
      new Option(
        "--convergence <c>",
        "for guests that write faster than the link: none (pre-copy only) | auto-converge (throttle the " +
          "guest) | postcopy (switch to post-copy when pre-copy stops gaining); not none needs NRDL 2",
      ).choices([...CONVERGENCE]),
    )
    .addOption(
      new Option("--on-error <rule>", "abort: stop everything on the first failure; continue: move the rest").choices([
        ...ON_ERROR,
      ]),
    );
}

export interface ReductionOptions {
  compress?: CompressChoice;
  dedup?: DedupChoice;
}

/** The stream reductions to offer (nrdl/SPEC.md 5.7, 5.8); absent, the config's defaults.compress and .dedup. */
export function withReductionOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option(
        "--compress <method>",
        "reduce each VM's migration stream: zstd or zlib (compressed over multifd channels), xbzrle " +
          "(re-sent pages as differences), none; auto (default: defaults.compress) offers what both hosts can " +
          "do when --bandwidth-mbps caps the move (not with post-copy). Needs NRDL 2; a destination without it " +
          "gets the plain stream",
      ).choices([...COMPRESS_CHOICES]),
    )
    .addOption(
      new Option(
        "--dedup <mode>",
        "group page dedup: a page the destination already received for any VM of this move crosses the " +
          "link as its SHA-256; on, off; auto (default: defaults.dedup) when --bandwidth-mbps caps the move. " +
          "Only with --strategy switchover (a group commit; not with post-copy); a destination that cannot " +
          "gets the plain stream",
      ).choices([...DEDUP_CHOICES]),
    );
}

/** The options over the config's defaults; sequential means one at a time, whatever the default width. */
export function policyFrom(o: PolicyOptions, d: HostConfig["defaults"]): Policy {
  const strategy = o.strategy ?? d.strategy;
  return {
    strategy,
    maxParallel: strategy === "sequential" ? 1 : (num("max-parallel", o.maxParallel) ?? d.maxParallel),
    bandwidthMbps: num("bandwidth-mbps", o.bandwidthMbps) ?? d.bandwidthMbps,
    downtimeLimitMs: num("downtime-limit-ms", o.downtimeLimitMs) ?? d.downtimeLimitMs,
    timeoutS: num("timeout-s", o.timeoutS) ?? d.timeoutS,
    onError: o.onError ?? d.onError,
    convergence: o.convergence ?? "none",
  };
}
