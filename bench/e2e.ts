/**
 * npm run bench:e2e — the signalling overhead of sip-teleport. The exp2 group (router1, video)
 * moves back and forth between two local hosts, alternating between the full SIP dialog
 * (INVITE with the NRDL offer, arming, 200/ACK, INFO progress, BYE with the reports) and the same
 * QEMU migrations issued directly through the driver with no SIP (arm both listeners, migrate
 * one after the other, wait until each runs). Same VMs, same machine, same TLS-PSK streams.
 * Prints the median wall time of each, the ratio and the difference; writes bench/out/e2e.json.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DestinationAgent } from "../agents/destination/agent";
import { SourceAgent } from "../agents/source/agent";
import { hostOf, sipOf } from "../agents/wiring";
import { parseConfig } from "../lib/config/load";
import type { Host } from "../lib/hypervisor/host";
import { terminateRunDirs } from "../lib/hypervisor/pidfile";
import { silentLogger } from "../lib/log/logger";
import type { AgentSip } from "../agents/wiring";
import { ensureGuest, guestVm } from "../lib/guest/guest";
import { repoRoot } from "../lib/version";

const PAIRS = Number(process.env.BENCH_PAIRS ?? 10);
const VMS = [
  { name: "router1", role: "router" as const },
  { name: "video", role: "server" as const },
];
const POLICY = {
  strategy: "sequential" as const,
  maxParallel: 1,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 120,
  onError: "abort" as const,
};

interface Side {
  name: "dc1" | "dc2";
  host: Host;
  sip: AgentSip;
  agent: SourceAgent;
  uri: string;
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
    const cfg = parseConfig({
      host: name,
      sip: { aor: `sip:${name}@127.0.0.1`, listen: [{ transport: "udp", address: "127.0.0.1", port: 0 }] },
      inventory,
      runDir: path.join(base, name),
      stateDir: path.join(base, `${name}-state`),
      migration: { address: "127.0.0.1", ports: `${49500 + i * 100}-${49599 + i * 100}` },
    });
    const host = hostOf(cfg, silentLogger);
    const sip = sipOf(cfg, silentLogger);
    const dest = new DestinationAgent({ config: cfg, sip, host, logger: silentLogger });
    await dest.start(); // one SIP endpoint per host: its destination agent and its source agent share it
    destinations.push(dest);
    sides.push({
      name,
      host,
      sip,
      agent: new SourceAgent({ sip, host, hostName: name, logger: silentLogger }),
      uri: `sip:${name}@127.0.0.1:${sip.listeners[0].port}`,
    });
  }
  const [dc1, dc2] = sides;
  try {
    await Promise.all(VMS.map((v) => dc1.host.find(v.name)?.driver.start(v.name)));
    const names = VMS.map((v) => v.name);
    const sipMs: number[] = [];
    const directMs: number[] = [];
    const arming: number[] = [];
    let here = dc1;
    let there = dc2;
    const hop = () => ([here, there] = [there, here]);
    // one warm-up move each way: a VM's first migration after boot is slower
    await here.agent.migrate({ to: there.uri, vms: names, policy: POLICY });
    hop();
    process.stdout.write(`bench:e2e: exp2 (${names.join(", ")}), ${PAIRS} pairs, alternating SIP and direct\n`);
    for (let i = 0; i < PAIRS; i++) {
      let t0 = performance.now();
      const summary = await here.agent.migrate({ to: there.uri, vms: names, policy: POLICY });
      sipMs.push(performance.now() - t0);
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
      process.stdout.write(`  pair ${i + 1}: sip ${sipMs[i].toFixed(0)} ms, direct ${directMs[i].toFixed(0)} ms\n`);
    }
    const s = median(sipMs);
    const d = median(directMs);
    const rows = [
      ["", "median ms", "min", "max"],
      ["sip-teleport (SIP dialog)", s.toFixed(0), Math.min(...sipMs).toFixed(0), Math.max(...sipMs).toFixed(0)],
      ["direct QMP (no SIP)", d.toFixed(0), Math.min(...directMs).toFixed(0), Math.max(...directMs).toFixed(0)],
    ];
    const table = rows.map((r) => `| ${r.join(" | ")} |`);
    table.splice(1, 0, "|---|---|---|---|");
    process.stdout.write("\n" + table.join("\n") + "\n");
    process.stdout.write(
      `\nratio sip/direct: ${(s / d).toFixed(3)}  (signalling overhead ${(s - d).toFixed(0)} ms ` +
        `per group; INVITE->200 incl. arming: median ${median(arming).toFixed(0)} ms)\n`,
    );
    const out = path.join(repoRoot(), "bench", "out");
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(
      path.join(out, "e2e.json"),
      JSON.stringify(
        { pairs: PAIRS, sipMs, directMs, armingMs: arming, medianSipMs: s, medianDirectMs: d, ratio: s / d },
        null,
        2,
      ),
    );
  } finally {
    for (const d of destinations) await d.stop().catch(() => undefined);
    await terminateRunDirs(["dc1", "dc2"].map((n) => path.join(base, n)));
    fs.rmSync(base, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:e2e failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
