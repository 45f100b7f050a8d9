import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { TeleportError } from "../../lib/errors";
import { withAskedCommit } from "../../lib/plan/dedup";
import { ladderSteps, renderLadder, type TraceEvent } from "../../lib/sip/ladder";
import { parseNrdlOrThrow } from "../../nrdl";
import type { Offer } from "../../nrdl/types";
import { SourceAgent } from "../source/agent";
import { dryRun, renderDryRun } from "../source/dry-run";
import { ProgressDisplay, type DisplayMode } from "../source/progress-display";
import { hostOf, sipOf } from "../wiring";
import { permittedDestinations, reportError, setup, withCommonOptions, type CommonOptions } from "./common";
import {
  policyFrom,
  withPolicyOptions,
  withReductionOptions,
  type PolicyOptions,
  type ReductionOptions,
} from "./policy-options";

interface MigrateOptions extends CommonOptions, PolicyOptions, ReductionOptions {
  to: string;
  proxy?: string;
  plan?: string;
  json?: boolean;
  ladder?: boolean;
  dryRun?: boolean;
  allowUnlistedDestination?: boolean;
}

/** Exit codes an operator's script can act on. */
export const EXIT = { moved: 0, notAllMoved: 1, invalid: 2, refused: 3 } as const;

export function registerMigrateCommand(program: Command): void {
  const cmd = withCommonOptions(program.command("migrate"))
    .description("move VMs of this host to a destination agent over SIP (the source agent)")
    .argument("[vm...]", "VMs from this host's inventory")
    .requiredOption("--to <sip-uri>", "the destination agent, e.g. sip:dc2@10.10.10.67")
    .option("--proxy <sip-uri>", "send the INVITE through this outbound proxy (e.g. Kamailio)")
    .option("--plan <file>", "an NRDL offer to run instead of VM names (its policy and dependencies apply)");
  withReductionOptions(withPolicyOptions(cmd))
    .option("--json", "JSON lines instead of a progress display (for scripts)")
    .option("--ladder", "print the SIP ladder of the dialog at the end")
    .option(
      "--dry-run",
      "ask the destination what it would arm or refuse (OPTIONS with the offer) and print the plan with " +
        "estimates; arms, starts and moves nothing",
    )
    .option(
      "--allow-unlisted-destination",
      "send to --to even though security.destinations does not list it (this run only; redirects stay checked)",
    )
    .addHelpText(
      "after",
      `
Order: VMs with depends-on move after what they depend on; network functions (router, switch,
firewall, nat) move before servers and storage. Ctrl-C before the answer sends CANCEL; after it,
running migrations are cancelled (the VMs keep running here) and the dialog is closed with BYE.

Where VMs may go: --to must match security.destinations of the config (empty: loopback only);
otherwise nothing is sent unless --allow-unlisted-destination is given. A 3xx redirect is
followed only to a listed destination. Use ;transport=tls with sip.tls.ca so the destination's
certificate proves it is the real one (sip-teleport config check warns otherwise).

Compression: a capped move is bound by the bytes it carries, and guest memory compresses well
(the test guests' pages to 0.39x with zlib level 1), so with --bandwidth-mbps the destination is
offered zstd, zlib and xbzrle and picks the first its hypervisor driver can do (QEMU: all three;
libvirt and VirtualBox: none, their streams stay plain). Note that QEMU 7.2 counts the cap before
multifd compression: zstd/zlib then save link bytes, not time; they save time on a link slower
than the cap.

Group page dedup: guests that boot the same kernel hold many equal pages, and within one dialog
each such page crosses the link once; after that it goes as its SHA-256 and the destination
copies it from the dialog's index (migration.dedupIndexPages pages, 256 MiB by default). It needs
--strategy switchover with group commit (the source's copy waits paused for the destination's
word), so --dedup on with another strategy is refused; it goes with xbzrle but not with zstd/zlib
(the destination then picks xbzrle or none). The summary says how many pages went as references.

Exit status: 0 every VM moved, 1 some did not, 2 invalid input, 3 the destination refused.
With --dry-run: 0 the destination would accept, 3 it would refuse.

Examples:
  $ sip-teleport migrate --to sip:dc2@10.10.10.67 router1 video
  $ sip-teleport migrate --dry-run --bandwidth-mbps 100 --to sip:dc2@10.10.10.67 router1 video
  $ sip-teleport migrate --compress zstd --to sip:dc2@10.10.10.67 router1 video
  $ sip-teleport migrate --strategy switchover --dedup on --to sip:dc2@10.10.10.67 router1 video
  $ sip-teleport migrate --to sip:dc2@example.net --proxy sip:10.0.0.5;transport=tcp --strategy switchover router1 video
  $ sip-teleport nrdl example exp3 > exp3.xml && sip-teleport migrate --to sip:dc2@10.10.10.67 --plan exp3.xml`,
    )
    .action(async (vms: string[], o: MigrateOptions) => {
      process.exitCode = await runMigrate(vms, o);
    });
}

async function runMigrate(vms: string[], o: MigrateOptions): Promise<number> {
  /** Errors before the INVITE left are the operator's input (2); after it, the destination's refusal (3). */
  let invited = false;
  const trace: TraceEvent[] = [];
  try {
    const { cfg, logger } = setup(o);
    const destinations = permittedDestinations(cfg, [o.to], o.allowUnlistedDestination, logger);
    let plan: Offer | undefined;
    if (o.plan) {
      const doc = parseNrdlOrThrow(readFileSync(o.plan, "utf8"));
      if (doc.body.kind !== "offer")
        throw new TeleportError(400, "invalid plan", [`${o.plan} holds an <${doc.body.kind}>, not an <offer>`]);
      plan = doc.body;
    } else if (vms.length === 0) {
      throw new TeleportError(400, "nothing to migrate", ["name VMs, or give --plan FILE"]);
    }
    const policy = policyFrom(o, cfg.defaults);
    const compress = o.compress ?? cfg.defaults.compress;
    const dedup = o.dedup ?? cfg.defaults.dedup;
    const sip = sipOf(cfg, logger, { ephemeral: true, outboundProxy: o.proxy, trace: o.sipTrace });
    sip.onTrace((e) => trace.push(e));
    const agent = new SourceAgent({
      sip,
      host: hostOf(cfg, logger),
      hostName: cfg.host,
      logger,
      answerTimeoutS: cfg.timers.answerTimeoutS,
      stateDir: cfg.stateDir,
      compress: cfg.defaults.compress,
      dedup: cfg.defaults.dedup,
      dedupIndexPages: cfg.migration.dedupIndexPages,
      postcopyRecoveryS: cfg.timers.postcopyRecoveryS,
      redirectAllowed: (target) => destinations.check(target),
      migrationNetworks: (target) => destinations.migrationNetworks(target),
    });
    const mode: DisplayMode = o.json ? "json" : process.stdout.isTTY ? "tty" : "plain";
    const display = new ProgressDisplay(mode);
    const ac = new AbortController();
    const onSigint = () => {
      process.stderr.write("\nsip-teleport: interrupted; cancelling (VMs stay where they run)\n");
      ac.abort();
    };
    process.once("SIGINT", onSigint);
    if (o.dryRun) {
      const offer = await agent.buildOffer({ to: o.to, vms, policy, plan, compress, dedup });
      await sip.start();
      invited = true;
      try {
        // as the INVITE would ask: group commit decides what the destination accepts (dedup, SPEC.md 5.8)
        const d = await dryRun(sip, o.to, withAskedCommit(offer, cfg.stateDir));
        process.stdout.write(o.json ? JSON.stringify(d) + "\n" : renderDryRun(d));
        return d.status >= 200 && d.status < 300 ? EXIT.moved : EXIT.refused;
      } finally {
        await sip.stop();
      }
    }
    await agent.recover();
    await sip.start();
    try {
      const onPhase = display.onPhase.bind(display);
      display.onPhase = (phase, detail) => {
        if (phase === "inviting") invited = true;
        onPhase(phase, detail);
      };
      const request = { to: o.to, vms, policy, plan, compress, dedup, signal: ac.signal };
      const summary = await agent.migrate(request, display);
      display.summary(summary);
      if (o.ladder) process.stdout.write("\n" + renderLadder(ladderSteps(trace), cfg.sip.aor, o.to));
      return summary.outcome === "completed" ? EXIT.moved : EXIT.notAllMoved;
    } finally {
      process.removeListener("SIGINT", onSigint);
      await sip.stop();
    }
  } catch (err) {
    reportError(err);
    if (o.ladder && trace.length) process.stdout.write("\n" + renderLadder(ladderSteps(trace), "source", o.to));
    return invited ? EXIT.refused : EXIT.invalid;
  }
}
