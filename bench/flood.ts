/**
 * bench:flood — a real exp2 move (router1, video) while its destination is flooded: 1000
 * INVITE/s from a stranger (not in the allowlist), 200 INVITE/s with wrong digest credentials,
 * garbage UDP and 1000 idle TCP connections, each from its own loopback address, and 100 INVITE/s
 * for 5 s from a raw stranger socket whose answers are counted for 33 s (responses per refused
 * INVITE: 1.0 when refusals are sent once, about 7 with Timer G). Prints the move's
 * figures beside a quiet run of the same move, INVITE->200 of second, legitimate dialogs opened
 * during each, the destination's RSS before, during and after, what the flooders got, and what
 * was left armed. Bounded: the flooders stop by themselves after FLOOD_SECONDS (40).
 * Usage: npm run bench:flood   (root: QEMU guests; env FLOOD_SECONDS, FLOOD_STRANGER, FLOOD_DIGEST,
 *        FLOOD_GARBAGE, FLOOD_IDLE, FLOOD_PROBES, FLOOD_COUNTED override the rates)
 */
import { execFileSync } from "node:child_process";
import { floodedMove, type MoveFigures } from "./lib/flood-run";

const env = (name: string, fallback: number): number => Number(process.env[name] ?? fallback);

async function main(): Promise<void> {
  const rates = {
    seconds: env("FLOOD_SECONDS", 40),
    strangerPerS: env("FLOOD_STRANGER", 1000),
    wrongDigestPerS: env("FLOOD_DIGEST", 200),
    garbagePerS: env("FLOOD_GARBAGE", 1000),
    idleConnections: env("FLOOD_IDLE", 1000),
    probesPerS: env("FLOOD_PROBES", 5),
    countedPerS: env("FLOOD_COUNTED", 100),
  };
  const load = (): string =>
    execFileSync("uptime")
      .toString()
      .trim()
      .replace(/.*load average: /, "");
  console.log(`bench:flood ${JSON.stringify(rates)}; load average before: ${load()}`);
  const r = await floodedMove(rates, { quiet: true, log: (s) => console.log(s) });
  const row = (name: string, f: MoveFigures | undefined) =>
    f
      ? `| ${name} | ${f.outcome} | ${f.wallMs.toFixed(0)} | ${f.inviteTo200Ms.toFixed(0)} | ` +
        `${f.maxDowntimeMs.toFixed(0)} | ${f.probes.answered}/${f.probes.started} | ` +
        `${f.probes.p50Ms} | ${f.probes.p99Ms} |`
      : `| ${name} | - |`;
  console.log("");
  console.log(
    "| exp2 move dc1 -> dc2 | outcome | wall ms | INVITE->200 ms | max downtime ms | " +
      "2nd dialogs 200/started | p50 ms | p99 ms |",
  );
  console.log("|---|---|---|---|---|---|---|---|");
  console.log(row("quiet", r.quiet));
  console.log(row("flooded", r.flooded));
  if (r.quiet) console.log(`ratio flooded/quiet wall time: ${(r.flooded.wallMs / r.quiet.wallMs).toFixed(2)}`);
  console.log("");
  const sippRow = (name: string, s: typeof r.stranger) =>
    `| ${name} | ${s.successful + s.failed} | ${s.successful} | ${s.failed} |`;
  console.log("| flooder | calls | refused as expected (401/403/503) | other outcome (200, timeout) |");
  console.log("|---|---|---|---|");
  console.log(sippRow(`stranger ${rates.strangerPerS}/s from 127.0.0.2`, r.stranger));
  console.log(sippRow(`wrong digest ${rates.wrongDigestPerS}/s from 127.0.0.3`, r.wrongDigest));
  for (const s of [r.stranger, r.wrongDigest]) if (!s.successful) console.log(s.output.slice(-1500));
  console.log(`garbage UDP: ${r.garbageSent} datagrams from 127.0.0.4`);
  if (r.reflection) {
    const { invites, answered, responses, mostCopies } = r.reflection;
    console.log(
      `counted stranger 127.0.0.5: ${invites} INVITEs sent, ${answered} refused (the rest unanswered: ` +
        `dropped before the agent read them), ${responses} responses in 33 s after the last: ` +
        `${(responses / Math.max(1, answered)).toFixed(2)} responses per refused INVITE (most to one: ${mostCopies})`,
    );
  }
  console.log(
    `idle TCP: ${r.idle.opened} opened from 127.0.0.10-29, ${r.idle.refusedAtOnce} closed within 1 s, ` +
      `at most ${r.idle.agentHeldMax} held by the agent, ${r.idle.openAtEnd} still open after ${rates.seconds} s`,
  );
  console.log(
    `destination RSS: before ${r.rssMiB.before.toFixed(1)} MiB, during (max) ${r.rssMiB.duringMax.toFixed(1)} MiB, ` +
      `after ${r.rssMiB.after.toFixed(1)} MiB`,
  );
  console.log(
    `left armed ${(r.settleMs / 1000).toFixed(1)} s after the flood: ${r.leftArmed} probe listeners, ` +
      `${r.journal} journal entries; placement ${JSON.stringify(r.placement)}`,
  );
  console.log(`load average after: ${load()}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
