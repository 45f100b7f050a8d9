/**
 * npm run bench:e2e — the signalling overhead of sip-teleport. The exp2 group (router1, video)
 * moves back and forth between two local hosts, alternating between the full SIP dialog
 * (INVITE with the NRDL offer, arming, 200/ACK, INFO progress, BYE with the reports) and the same
 * QEMU migrations issued directly through the driver with no SIP (arm both listeners, migrate
 * one after the other, wait until each runs). Same VMs, same machine, same TLS-PSK streams.
 * Prints the median wall time of each, the ratio and the difference; writes bench/out/e2e.json.
 *
 * Beside them, in the same pairs: INVITE->200 (the destination vets the offer and arms one
 * incoming QEMU per VM) and what it is held to, the same incoming QEMUs started in parallel on the
 * same machine with the QEMU driver's own command line and nothing else (no SIP, no QMP), right
 * before and right after that SIP move (their mean). BENCH_GROUP=exp3 moves four VMs instead of
 * two; BENCH_PAIRS=N repeats.
 */
import execa from "execa";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DestinationAgent } from "../agents/destination/agent";
import { terminateRunDirs } from "../lib/hypervisor/pidfile";
import { QemuDriver } from "../lib/hypervisor/qemu";
import { silentLogger } from "../lib/log/logger";
import { ensureGuest, guestVm } from "../lib/guest/guest";
import { repoRoot } from "../lib/version";
import { loopbackHost, type LoopbackHost } from "./lib/loopback-host";

const PAIRS = Number(process.env.BENCH_PAIRS ?? 10);
const GROUPS = {
  exp2: [
    { name: "router1", role: "router" as const },
    { name: "video", role: "server" as const },
  ],
  exp3: [
    { name: "firewall", role: "firewall" as const },
    { name: "router", role: "router" as const },
    { name: "web", role: "server" as const },
    { name: "storage", role: "storage" as const },
  ],
};
const GROUP = (process.env.BENCH_GROUP ?? "exp2") as keyof typeof GROUPS;
const VMS = GROUPS[GROUP];
if (!VMS) throw new Error(`BENCH_GROUP must be one of ${Object.keys(GROUPS).join(", ")}`);
const POLICY = {
  strategy: "sequential" as const,
  maxParallel: 1,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 120,
  onError: "abort" as const,
};

type Side = LoopbackHost;

/**
 * The group's incoming QEMUs started at once, each exactly as the QEMU driver arms it
 * (`qemuArgs(def, true)`: -daemonize -incoming defer), until every one has daemonized; then quit
 * again. What arming cannot go below: the time its QEMUs take to start. `bare` is a QEMU driver of
 * its own run dir on the destinations' machine, so it can start them while the VMs are armed or run.
 */
async function parallelStart(bare: QemuDriver): Promise<number> {
  const defs = bare.inventory();
  const t0 = performance.now();
  await Promise.all(defs.map((def) => execa("qemu-system-x86_64", bare.qemuArgs(def, true), { stdin: "ignore" })));
  const ms = performance.now() - t0;
  await Promise.all(defs.map((def) => bare.stop(def.name)));
  return ms;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main(): Promise<void> {
  const guest = await ensureGuest();
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-bench-e2e-"));
  const inventory = VMS.map((v) => ({ ...guestVm(guest, v.name), role: v.role }));
  const sides: Side[] = [];
  const destinations: DestinationAgent[] = [];
  for (const [i, name] of (["dc1", "dc2"] as const).entries()) {
    const side = await loopbackHost(base, name, inventory, `${49500 + i * 100}-${49599 + i * 100}`);
    destinations.push(side.dest);
    sides.push(side);
  }
  const [dc1, dc2] = sides;
  try {
    await Promise.all(VMS.map((v) => dc1.host.find(v.name)?.driver.start(v.name)));
    const names = VMS.map((v) => v.name);
    const sipMs: number[] = [];
    const directMs: number[] = [];
    const arming: number[] = [];
    const starts: number[] = [];
    const bracket: Array<[number, number]> = [];
    const bare = new QemuDriver({ runDir: path.join(base, "bare"), inventory, logger: silentLogger });
    let here = dc1;
    let there = dc2;
    const hop = () => ([here, there] = [there, here]);
    // one warm-up move each way: a VM's first migration after boot is slower
    await here.agent.migrate({ to: there.uri, vms: names, policy: POLICY });
    hop();
    process.stdout.write(`bench:e2e: ${GROUP} (${names.join(", ")}), ${PAIRS} pairs, alternating SIP and direct\n`);
    for (let i = 0; i < PAIRS; i++) {
      // right before and right after the SIP move, so a load that drifts meanwhile weighs on both figures
      const before = await parallelStart(bare);
      let t0 = performance.now();
      const summary = await here.agent.migrate({ to: there.uri, vms: names, policy: POLICY });
      sipMs.push(performance.now() - t0);
      const after = await parallelStart(bare);
      bracket.push([before, after]);
      starts.push((before + after) / 2);
      arming.push(summary.phases.arming);
      if (summary.outcome !== "completed")
        throw new Error(`SIP run ${i} did not complete: ${JSON.stringify(summary.vms)}`);
      hop();
      t0 = performance.now();
      const armed = await Promise.all(
        names.map((vm) =>
          there.host.find(vm)!.driver.arm(vm, { address: "127.0.0.1", secret: `bench-secret-${i}-xxxxxxxx` }),
        ),
      );
      for (const [j, vm] of names.entries()) {
        await here.host
          .find(vm)!
          .driver.migrate(vm, { uri: armed[j].uri, secret: `bench-secret-${i}-xxxxxxxx` }, POLICY).done;
        await there.host.find(vm)!.driver.waitResumed(vm, 30_000);
      }
      directMs.push(performance.now() - t0);
      hop();
      process.stdout.write(
        `  pair ${i + 1}: sip ${sipMs[i].toFixed(0)} ms, direct ${directMs[i].toFixed(0)} ms, ` +
          `INVITE->200 ${arming[i]} ms, parallel QEMU start ${starts[i].toFixed(0)} ms\n`,
      );
    }
    const s = median(sipMs);
    const d = median(directMs);
    const a = median(arming);
    const p = median(starts);
    // each pair's two figures were taken moments apart: their ratio is what a drifting load changes least
    const pairRatio = median(arming.map((x, i) => x / starts[i]));
    const row = (what: string, xs: number[]) => [
      what,
      median(xs).toFixed(0),
      Math.min(...xs).toFixed(0),
      Math.max(...xs).toFixed(0),
    ];
    const rows = [
      ["", "median ms", "min", "max"],
      row("sip-teleport (SIP dialog)", sipMs),
      row("direct QMP (no SIP)", directMs),
      row("INVITE->200 (vet + arming)", arming),
      row(`parallel QEMU start (${names.length} incoming)`, starts),
    ];
    const table = rows.map((r) => `| ${r.join(" | ")} |`);
    table.splice(1, 0, "|---|---|---|---|");
    process.stdout.write("\n" + table.join("\n") + "\n");
    process.stdout.write(
      `\nratio sip/direct: ${(s / d).toFixed(3)} (target <= 1.05; signalling overhead ${(s - d).toFixed(0)} ms ` +
        `per group)\nratio arming/parallel start: ${(a / p).toFixed(3)} (target <= 1.25; INVITE->200 ` +
        `${a.toFixed(0)} ms, its ${names.length} QEMUs started in parallel ${p.toFixed(0)} ms; ` +
        `median of the pairs' own ratios ${pairRatio.toFixed(3)})\n`,
    );
    const out = path.join(repoRoot(), "bench", "out");
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(
      path.join(out, "e2e.json"),
      JSON.stringify(
        {
          group: GROUP,
          pairs: PAIRS,
          sipMs,
          directMs,
          armingMs: arming,
          parallelStartMs: starts,
          parallelStartBeforeAfterMs: bracket,
          medianSipMs: s,
          medianDirectMs: d,
          ratio: s / d,
          medianArmingMs: a,
          medianParallelStartMs: p,
          armingRatio: a / p,
          medianPairArmingRatio: pairRatio,
        },
        null,
        2,
      ),
    );
  } finally {
    for (const d of destinations) await d.stop().catch(() => undefined);
    await terminateRunDirs(["dc1", "dc2", "bare"].map((n) => path.join(base, n)));
    fs.rmSync(base, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:e2e failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
