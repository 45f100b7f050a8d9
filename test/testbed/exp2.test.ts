/**
 * The reduced benchmark: exp2 (router + video server behind it) moved once per strategy by the
 * agents over SIP (each in its data center's namespace), back and forth between the data centers, checking invariants
 * only (no timings): every
 * guest answers from the destination afterwards, its uptime kept counting, nothing is left
 * running on the source, and every probe answers again. Needs root (namespaces) and QEMU.
 */
import fs from "node:fs";
import path from "node:path";
import { STRATEGIES } from "../../nrdl/types";
import { AgentPair, ensureBuilt } from "./agents";
import { EXPERIMENT } from "./experiments";
import { ensureGuest } from "../../lib/guest/guest";
import { Lab } from "./lab";
import type { HostName } from "./network";
import { measureMove } from "./run";
import { expectOneGroupInterruption } from "./group-checks";

/** Signatures of a guest kernel that went wrong (see bench/README.md, bench:guest). */
const GUEST_CRASH = /not a head!|kernel BUG|Kernel panic|BUG: |Oops|double fault/;

const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

asRoot("exp2 on the testbed, one move per strategy", () => {
  let lab: Lab | undefined;
  let agents: AgentPair | undefined;

  beforeAll(async () => {
    await ensureBuilt();
    const guest = await ensureGuest();
    lab = await Lab.create(EXPERIMENT.exp2, guest);
    await lab.bootAll();
    agents = await AgentPair.start(lab);
  }, 180_000);

  afterAll(async () => {
    await agents?.stop();
    await lab?.destroy();
  }, 30_000);

  const hops: Array<[HostName, HostName]> = [
    ["dc1", "dc2"],
    ["dc2", "dc1"],
    ["dc1", "dc2"],
  ];
  STRATEGIES.forEach((strategy, i) => {
    it(`${strategy}: ${hops[i][0]} -> ${hops[i][1]}`, async () => {
      if (!lab || !agents) throw new Error("lab not set up");
      const [from, to] = hops[i];
      const policy = {
        strategy,
        maxParallel: strategy === "sequential" ? 1 : 2,
        bandwidthMbps: 0,
        downtimeLimitMs: 300,
        timeoutS: 60,
        onError: "abort" as const,
      };
      const dir = lab.runDir(to);
      const logs = lab.exp.guests.map((g) => path.join(dir, `${g.name}.serial.log`));
      const sizes = logs.map((f) => (fs.existsSync(f) ? fs.statSync(f).size : 0));
      const r = await measureMove(lab, agents, { from, to, policy }, { linkMbit: 0 });
      // A guest kernel that went wrong after the move is a failure, named (the driver's RAM padding
      // keeps QEMU < 9.0 under TCG from losing dirty pages; bench:guest measures both ways).
      const crashed = lab.exp.guests.filter((g, i) =>
        GUEST_CRASH.test(fs.existsSync(logs[i]) ? fs.readFileSync(logs[i], "utf8").slice(sizes[i]) : ""),
      );
      expect(crashed.map((g) => g.name)).toEqual([]);
      expect(r.violations).toEqual([]);
      expect(r.report.vms.map((v) => v.outcome)).toEqual(["completed", "completed"]);
      for (const vm of r.vms) {
        expect(vm.runningOn).toEqual([to]);
        expect(vm.marks.start).toBeDefined();
        expect(vm.stopToResumeMs).toBeGreaterThan(0);
      }
      // Every probe delivered before and after the move, and the stream came through the router.
      for (const p of r.figures.probes) expect(p.replies).toBeGreaterThan(100);
      expect(r.udp?.bytes.some((b) => b > 0)).toBe(true);
      expect(r.report.phases?.arming).toBeGreaterThan(0);
      if (strategy === "switchover") expectOneGroupInterruption(r, lab);
    }, 90_000);
  });
});
