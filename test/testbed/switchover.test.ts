/**
 * Whole-group switchover on the testbed (exp3: firewall and router, web behind the firewall,
 * storage), moved by the agents over SIP: the group is stopped at once (its STOPs within a few ms)
 * and sent in parallel, every STOP before any RESUME. Then the group is moved back while storage dirties memory
 * faster than the shaped link carries: it cannot converge, so nobody moves and every guest keeps
 * running on the source. Needs root (namespaces) and QEMU.
 */
import { AgentPair, ensureBuilt } from "./agents";
import { EXPERIMENT } from "./experiments";
import { ensureGuest } from "../../lib/guest/guest";
import { switchoverWindowMs } from "../../lib/plan/execute";
import { Lab } from "./lab";
import { measureMove } from "./run";
import { expectOneGroupInterruption } from "./group-checks";
import type { Policy } from "../../nrdl/types";

const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

const policy: Policy = {
  strategy: "switchover",
  maxParallel: 4,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 60,
  onError: "abort",
};

asRoot("exp3 whole-group switchover on the testbed", () => {
  let lab: Lab | undefined;
  let agents: AgentPair | undefined;

  beforeAll(async () => {
    await ensureBuilt();
    lab = await Lab.create(EXPERIMENT.exp3, await ensureGuest());
    await lab.bootAll();
    agents = await AgentPair.start(lab);
  }, 240_000);

  afterAll(async () => {
    await agents?.stop();
    await lab?.destroy();
  }, 30_000);

  it("dc1 -> dc2: one interruption for the group, stopped together", async () => {
    if (!lab || !agents) throw new Error("lab not set up");
    const r = await measureMove(lab, agents, { from: "dc1", to: "dc2", policy }, { linkMbit: 0 });
    expect(r.violations).toEqual([]);
    expectOneGroupInterruption(r, lab);
  }, 120_000);

  it("dc2 -> dc1 while storage dirties memory faster than the link: nobody moves", async () => {
    if (!lab || !agents) throw new Error("lab not set up");
    const storage = lab.exp.guests.find((g) => g.name === "storage");
    if (!storage) throw new Error("exp3 has no storage guest");
    expect(await lab.dirty(storage, 16)).toMatchObject({ rateMibS: 16 });
    // the writer runs: its first pass ends within a few seconds (more on a loaded machine)
    let passes = 0;
    for (let i = 0; i < 30 && passes === 0; i++) {
      await new Promise((r) => setTimeout(r, 500));
      passes = (await lab.dirty(storage))?.passes ?? 0;
    }
    expect(passes).toBeGreaterThan(0);
    try {
      const shaped = { ...policy, bandwidthMbps: 40, timeoutS: 40 };
      const r = await measureMove(lab, agents, { from: "dc2", to: "dc1", policy: shaped }, { linkMbit: 0 });
      expect(r.report.vms.find((v) => v.vm === "storage")?.outcome).not.toBe("completed");
      for (const v of r.report.vms) expect(v.outcome).not.toBe("completed");
      for (const v of r.vms) {
        expect(v.runningOn).toEqual(["dc2"]);
        expect(v.uptimeAfter).toBeGreaterThan(v.uptimeBefore as number); // kept running, not rebooted
        expect(v.marks.end).toBeUndefined(); // nothing resumed on dc1
      }
      // those that stopped waited at most the switchover window for storage to drain, then ran on at the source
      const stops = r.events.filter((e) => e.event === "STOP" && e.host === "dc2").map((e) => e.t);
      const resumes = r.events.filter((e) => e.event === "RESUME" && e.host === "dc2").map((e) => e.t);
      if (stops.length)
        expect(Math.max(...resumes) - Math.min(...stops)).toBeLessThan(switchoverWindowMs(shaped) + 2000);
    } finally {
      await lab.dirty(storage, 0);
    }
  }, 150_000);
});
