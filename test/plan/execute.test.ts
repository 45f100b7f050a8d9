/**
 * The executor's scheduling rules, driven by scripted migration handles (the real QEMU
 * migrations are exercised by the hypervisor and agent suites; here we need exact control
 * over which migration fails and when).
 */
import type { Policy, Role, VmSpec } from "../../nrdl/types";
import type { MigrationHandle, MigrationResult } from "../../lib/hypervisor/driver";
import { TeleportError } from "../../lib/errors";
import { executePlan, type VmOutcome } from "../../lib/plan/execute";
import { planWaves } from "../../lib/plan/waves";

const vm = (name: string, role: Role, dependsOn: string[] = []): VmSpec => ({
  name,
  role,
  dependsOn,
  disks: [],
  hypervisor: "qemu",
  memoryMib: 96,
  cpus: 1,
});
const policy = (p: Partial<Policy>): Policy => ({
  strategy: "sequential",
  maxParallel: 1,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 60,
  onError: "abort",
  ...p,
});

interface Script {
  /** precopy: never ready; converge: never stops for switchover (keeps pre-copying). */
  failAt?: "precopy" | "converge";
  ms?: number;
}

/** A handle that completes after `ms`, or fails, and logs what happened to it. */
class Recorder {
  log: string[] = [];
  running = 0;
  peak = 0;
  /** Migrations in their first pass (not yet held). */
  precopying = 0;
  precopyPeak = 0;
  constructor(private readonly scripts: Record<string, Script> = {}) {}

  start = (name: string, pause: boolean): MigrationHandle => {
    const s = this.scripts[name] ?? {};
    this.log.push(`start ${name}`);
    this.running++;
    this.peak = Math.max(this.peak, this.running);
    let aborted = false;
    let release!: () => void;
    const switched = new Promise<void>((r) => (release = r));
    this.precopying++;
    this.precopyPeak = Math.max(this.precopyPeak, this.precopying);
    const done = (async (): Promise<MigrationResult> => {
      try {
        await new Promise((r) => setTimeout(r, s.ms ?? 5));
        if (aborted) throw new TeleportError(487, "migration cancelled");
        if (s.failAt === "precopy") throw new TeleportError(500, `${name} lost its listener`);
        if (pause) await switched;
        if (aborted) throw new TeleportError(487, "migration cancelled");
        this.log.push(`done ${name}`);
        return { vm: name, totalMs: 5, downtimeMs: 1, transferredBytes: 100 };
      } finally {
        this.running--;
      }
    })();
    const readyToSwitch = (async () => {
      await new Promise((r) => setTimeout(r, s.ms ?? 5));
      this.precopying--;
      if (s.failAt === "precopy" || aborted) throw new TeleportError(500, `${name} did not converge`);
    })();
    readyToSwitch.catch(() => undefined);
    return {
      done,
      readyToSwitch,
      converge: async () => {
        if (s.failAt === "converge") return new Promise<void>(() => undefined);
        this.log.push(`stop ${name}`);
      },
      switchover: async () => {
        this.log.push(`switch ${name}`);
        release();
        await done;
      },
      abort: async () => {
        aborted = true;
        this.log.push(`abort ${name}`);
        release();
      },
    };
  };
}

const states = (o: VmOutcome[]) => Object.fromEntries(o.map((x) => [x.vm, x.state]));

describe("executePlan", () => {
  it("sequential: one at a time, waves in order", async () => {
    const r = new Recorder();
    const out = await executePlan({
      plan: planWaves([vm("video", "server"), vm("r1", "router"), vm("r2", "router")]),
      policy: policy({}),
      start: r.start,
    });
    expect(r.peak).toBe(1);
    expect(r.log.filter((l) => l.startsWith("start"))).toEqual(["start r1", "start r2", "start video"]);
    expect(states(out)).toEqual({ r1: "completed", r2: "completed", video: "completed" });
  });

  it("parallel: at most max-parallel at once", async () => {
    const r = new Recorder();
    const vms = ["a", "b", "c", "d", "e"].map((n) => vm(n, "server"));
    await executePlan({
      plan: planWaves(vms),
      policy: policy({ strategy: "parallel", maxParallel: 2 }),
      start: r.start,
    });
    expect(r.peak).toBe(2);
  });

  it("on-error abort: a failure cancels what runs and starts nothing more", async () => {
    const r = new Recorder({ a: { failAt: "precopy", ms: 5 }, b: { ms: 200 } });
    const out = await executePlan({
      plan: planWaves([vm("a", "server"), vm("b", "server"), vm("c", "server")]),
      policy: policy({ strategy: "parallel", maxParallel: 2 }),
      start: r.start,
    });
    expect(states(out)).toEqual({ a: "failed", b: "aborted", c: "aborted" });
    expect(r.log).toContain("abort b");
    expect(r.log).not.toContain("start c");
  });

  it("on-error continue: the others move, dependents of the failed VM stay", async () => {
    const r = new Recorder({ r1: { failAt: "precopy" } });
    const out = await executePlan({
      plan: planWaves([vm("r1", "router"), vm("r2", "router"), vm("video", "server", ["r1"]), vm("web", "server")]),
      policy: policy({ onError: "continue" }),
      start: r.start,
    });
    // web also waits for r1 (role order), so it stays too; r2 moves.
    expect(states(out)).toEqual({ r1: "failed", r2: "completed", video: "aborted", web: "aborted" });
    expect(out.find((o) => o.vm === "video")).toMatchObject({ reason: expect.stringMatching(/r1.*did not move/) });
  });

  it("switchover: the whole group pre-copies at once, stops together, then switches over by dependencies", async () => {
    const r = new Recorder({ r1: { ms: 40 }, video: { ms: 5 }, web: { ms: 20 } });
    const out = await executePlan({
      plan: planWaves([vm("video", "server", ["r1"]), vm("web", "server"), vm("r1", "router")]),
      policy: policy({ strategy: "switchover", maxParallel: 4 }),
      start: r.start,
    });
    expect(states(out)).toEqual({ r1: "completed", video: "completed", web: "completed" });
    const at = (l: string) => r.log.indexOf(l);
    // every VM pre-copies before any stops, every VM stops before any switches over
    expect(r.log.slice(0, 3).sort()).toEqual(["start r1", "start video", "start web"]);
    expect(r.log.slice(3, 6).sort()).toEqual(["stop r1", "stop video", "stop web"]);
    // the router reaches the destination before the servers behind it are sent
    expect(at("done r1")).toBeLessThan(at("switch video"));
    expect(at("done r1")).toBeLessThan(at("switch web"));
  });

  it("switchover: max-parallel bounds the first passes, held VMs free their slot", async () => {
    const r = new Recorder();
    const out = await executePlan({
      plan: planWaves(["a", "b", "c", "d"].map((n) => vm(n, "server"))),
      policy: policy({ strategy: "switchover", maxParallel: 2 }),
      start: r.start,
    });
    expect(r.precopyPeak).toBe(2);
    expect(r.peak).toBe(4); // all four held at once: one switchover for the group
    expect(Object.values(states(out))).toEqual(["completed", "completed", "completed", "completed"]);
  });

  it("switchover: if one VM cannot pre-copy, nobody of the group switches", async () => {
    const r = new Recorder({ a: { failAt: "precopy" }, b: { ms: 20 }, r: { ms: 5 } });
    const out = await executePlan({
      plan: planWaves([vm("a", "server"), vm("b", "server"), vm("r", "router")]),
      policy: policy({ strategy: "switchover", onError: "continue", maxParallel: 3 }),
      start: r.start,
    });
    expect(states(out)).toEqual({ a: "failed", b: "aborted", r: "aborted" });
    expect(r.log.some((l) => l.startsWith("switch") || l.startsWith("stop"))).toBe(false);
  });

  it("switchover: if one VM does not stop within the window, the stopped ones resume at the source", async () => {
    const r = new Recorder({ b: { failAt: "converge" } });
    const t0 = Date.now();
    const out = await executePlan({
      plan: planWaves([vm("a", "server"), vm("b", "server")]),
      policy: policy({ strategy: "switchover", maxParallel: 2, downtimeLimitMs: 100 }),
      start: r.start,
    });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(3000);
    expect(states(out)).toEqual({ a: "aborted", b: "aborted" });
    expect(out[0]).toMatchObject({
      reason: expect.stringMatching(/not every VM stopped for switchover within 3000 ms/),
    });
    expect(r.log).toContain("stop a");
    expect(r.log.some((l) => l.startsWith("switch"))).toBe(false);
  });

  it("operator abort: running migrations are cancelled, the rest never starts", async () => {
    const r = new Recorder({ a: { ms: 300 } });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 30);
    const out = await executePlan({
      plan: planWaves([vm("a", "server"), vm("b", "server")]),
      policy: policy({}),
      start: r.start,
      signal: ac.signal,
    });
    expect(out).toEqual([
      { vm: "a", state: "aborted", reason: "aborted by operator" },
      { vm: "b", state: "aborted", reason: "aborted by operator" },
    ]);
  });
});
