/**
 * The executor's scheduling rules, driven by scripted migration handles (the real QEMU
 * migrations are exercised by the hypervisor and agent suites; here we need exact control
 * over which migration fails and when).
 */
import type { Policy, Role, VmSpec } from "../../nrdl/types";
import type { MigrationHandle, MigrationResult } from "../../lib/hypervisor/driver";
import { TeleportError } from "../../lib/errors";
import { executePlan, type GroupCommit, type GroupDecision, type VmOutcome } from "../../lib/plan/execute";
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
  /**
   * precopy: never ready; stop: never stops; drain: fails once stopped, before its switchover is
   * sent; switchover: fails after its switchover was sent (its device state may have left).
   */
  failAt?: "precopy" | "stop" | "drain" | "switchover";
  /** Stops on its own as soon as it is primed (an idle guest at full bandwidth). */
  selfStop?: boolean;
  /** How long prime() takes. */
  primeMs?: number;
  ms?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
    let stoppedAt: number | undefined;
    let markStopped!: (t: number) => void;
    const stopped = new Promise<number>((r) => (markStopped = r));
    const halt = (): number => {
      if (stoppedAt === undefined) {
        stoppedAt = Date.now();
        this.log.push(`stop ${name}`);
        markStopped(stoppedAt);
      }
      return stoppedAt;
    };
    const atSwitchover = stopped.then(async () => {
      if (s.failAt !== "drain") return;
      await sleep(5);
      throw new TeleportError(503, `${name} lost its destination while stopped`);
    });
    atSwitchover.catch(() => undefined);
    this.precopying++;
    this.precopyPeak = Math.max(this.precopyPeak, this.precopying);
    const done = (async (): Promise<MigrationResult> => {
      try {
        await sleep(s.ms ?? 5);
        if (aborted) throw new TeleportError(487, "migration cancelled");
        if (s.failAt === "precopy") throw new TeleportError(500, `${name} lost its listener`);
        if (s.failAt === "drain" && pause) await atSwitchover;
        if (pause) await Promise.race([switched, stopped.then(() => switched)]);
        if (aborted) throw new TeleportError(487, "migration cancelled");
        if (s.failAt === "switchover") throw new TeleportError(503, `${name} failed after its switchover`);
        this.log.push(`done ${name}`);
        return { vm: name, totalMs: 5, downtimeMs: 1, transferredBytes: 100, stoppedAt };
      } finally {
        this.running--;
      }
    })();
    done.catch(() => undefined);
    const readyToSwitch = (async () => {
      await sleep(s.ms ?? 5);
      this.precopying--;
      if (s.failAt === "precopy" || aborted) throw new TeleportError(500, `${name} did not converge`);
    })();
    readyToSwitch.catch(() => undefined);
    return {
      done,
      readyToSwitch,
      stopped,
      atSwitchover,
      prime: async () => {
        this.log.push(`prime ${name}`);
        if (s.selfStop) halt();
        await sleep(s.primeMs ?? 1);
        this.log.push(`primed ${name}`);
      },
      stop: async () => {
        if (s.failAt === "stop") return new Promise<number>(() => undefined);
        return halt();
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

/** The destination's side of group commit, scripted: it decides `outcome` unless the group was called off. */
function commitBy(outcome: "commit" | "abort") {
  const calls: string[] = [];
  const stops: number[][] = [];
  const gc: GroupCommit = {
    onStopped: (vms, first, last) => {
      calls.push(`stopped ${vms.join(",")}`);
      stops.push([first, last]);
    },
    decision: async (sent, calledOff) => {
      calls.push(`decide ${calledOff ?? "-"} (sent ${sent.join(",")})`);
      return calledOff || outcome === "abort"
        ? { outcome: "abort", reason: `group aborted: ${calledOff ?? "destination said so"}` }
        : { outcome: "commit" };
    },
    settle: async (vm, d: GroupDecision) => {
      calls.push(`settle ${vm} ${d.outcome}`);
    },
  };
  return { gc, calls, stops };
}

/** Two servers a and b moved as one group by the switchover strategy, with or without group commit. */
function moveGroupAB(r: Recorder, groupCommit?: GroupCommit, onError: Policy["onError"] = "abort") {
  return executePlan({
    plan: planWaves([vm("a", "server"), vm("b", "server")]),
    policy: policy({ strategy: "switchover", maxParallel: 2, onError }),
    start: r.start,
    ...(groupCommit ? { groupCommit } : {}),
  });
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

  it("switchover: the whole group pre-copies, is primed, stops at once, then all switch over in parallel", async () => {
    const r = new Recorder({ r1: { ms: 40 }, video: { ms: 5 }, web: { ms: 20 } });
    const out = await executePlan({
      plan: planWaves([vm("video", "server", ["r1"]), vm("web", "server"), vm("r1", "router")]),
      policy: policy({ strategy: "switchover", maxParallel: 4 }),
      start: r.start,
    });
    expect(states(out)).toEqual({ r1: "completed", video: "completed", web: "completed" });
    const steps = (verb: string) => r.log.filter((l) => l.startsWith(`${verb} `));
    const at = (l: string) => r.log.indexOf(l);
    // every VM pre-copies before any is primed, every one is primed before any stops, ...
    expect(r.log.slice(0, 3).sort()).toEqual(["start r1", "start video", "start web"]);
    expect(steps("prime").sort()).toEqual(["prime r1", "prime video", "prime web"]);
    expect(Math.max(...steps("primed").map(at))).toBeLessThan(Math.min(...steps("stop").map(at)));
    // ... every one stops before any switches over, and all are sent before any arrives (no waves)
    expect(Math.max(...steps("stop").map(at))).toBeLessThan(Math.min(...steps("switch").map(at)));
    expect(steps("switch")).toHaveLength(3);
    expect(Math.max(...steps("switch").map(at))).toBeLessThan(Math.min(...steps("done").map(at)));
  });

  it("switchover: the first VM that stops on its own stops the whole group at once", async () => {
    const r = new Recorder({ a: { selfStop: true }, b: { primeMs: 400 } });
    const t0 = Date.now();
    const out = await moveGroupAB(r);
    expect(states(out)).toEqual({ a: "completed", b: "completed" });
    // b is stopped right after a's own STOP, without waiting for b's prime
    expect(r.log).toContain("stop b");
    expect(r.log).not.toContain("primed b"); // still priming when the whole group had moved
    const stopsAt = out.map((o) => (o.state === "completed" ? (o.result.stoppedAt as number) : NaN));
    expect(Math.max(...stopsAt) - Math.min(...stopsAt)).toBeLessThan(100);
    expect(stopsAt[1] - t0).toBeLessThan(300);
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
    expect(r.log.some((l) => /^(prime|stop|switch) /.test(l))).toBe(false);
  });

  it("switchover: if one VM does not stop within the window, the stopped ones resume at the source", async () => {
    const r = new Recorder({ b: { failAt: "stop" } });
    const t0 = Date.now();
    const out = await executePlan({
      plan: planWaves([vm("a", "server"), vm("b", "server")]),
      policy: policy({ strategy: "switchover", maxParallel: 2, downtimeLimitMs: 100 }),
      start: r.start,
    });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(3000);
    expect(states(out)).toEqual({ a: "aborted", b: "aborted" });
    expect(out[0]).toMatchObject({ reason: expect.stringMatching(/not every VM stopped within 3000 ms/) });
    expect(r.log).toContain("stop a");
    expect(r.log).toContain("abort a");
    expect(r.log.some((l) => l.startsWith("switch"))).toBe(false);
  });

  it("switchover: one failing once stopped, before any is sent, calls the group off: nobody moves", async () => {
    const r = new Recorder({ b: { failAt: "drain" } });
    const { gc, calls } = commitBy("commit");
    const out = await moveGroupAB(r, gc, "continue");
    expect(states(out)).toEqual({ a: "aborted", b: "failed" });
    expect(out[0]).toMatchObject({
      reason: expect.stringMatching(/group cancelled: .*b lost its destination while stopped/),
    });
    expect(out[1]).toMatchObject({ reason: expect.stringMatching(/lost its destination while stopped/) });
    expect(r.log).toContain("abort a"); // a resumes at the source by its driver, no decision needed
    expect(r.log.some((l) => l.startsWith("switch "))).toBe(false);
    // announced at the stop, then told at once that nothing of the group will come (nothing was sent)
    expect(calls).toEqual([
      "stopped a,b",
      expect.stringMatching(/^decide switchover of the group cancelled: .*b lost its destination.* \(sent \)$/),
    ]);
  });

  it("group commit: every VM stopped is announced, then the destination's commit settles all", async () => {
    const r = new Recorder({ a: { ms: 10 }, b: { ms: 20 } });
    const { gc, calls, stops } = commitBy("commit");
    const out = await moveGroupAB(r, gc);
    expect(states(out)).toEqual({ a: "completed", b: "completed" });
    expect(out[0]).toMatchObject({ result: { transferredBytes: 100 } });
    expect(calls).toEqual(["stopped a,b", "decide - (sent a,b)", "settle a commit", "settle b commit"]);
    expect(stops[0][0]).toBeLessThanOrEqual(stops[0][1]);
    // the decision comes after every switchover was sent
    expect(r.log.filter((l) => l.startsWith("switch "))).toHaveLength(2);
  });

  it("group commit: a VM failing after its switchover calls the group off; abort settles every VM sent", async () => {
    const r = new Recorder({ b: { failAt: "switchover" } });
    const { gc, calls } = commitBy("commit");
    const out = await moveGroupAB(r, gc);
    expect(states(out)).toEqual({ a: "aborted", b: "aborted" });
    expect(out[0]).toMatchObject({ reason: expect.stringMatching(/group aborted: not switched over: b failed/) });
    expect(calls).toEqual([
      "stopped a,b",
      "decide not switched over: b failed in its switchover (sent a,b)",
      "settle a abort",
      "settle b abort",
    ]);
    expect(r.log.some((l) => l.startsWith("abort"))).toBe(false); // no source resumes on its own
  });

  it("group commit: the destination's abort settles every VM, none resumes by itself", async () => {
    const r = new Recorder();
    const { gc, calls } = commitBy("abort");
    const out = await moveGroupAB(r, gc);
    expect(states(out)).toEqual({ a: "aborted", b: "aborted" });
    expect(calls.slice(-2)).toEqual(["settle a abort", "settle b abort"]);
  });

  it("group commit: a VM failing in pre-copy calls the group off before any stop; no decision is asked", async () => {
    const r = new Recorder({ a: { failAt: "precopy" }, b: { ms: 20 } });
    const { gc, calls } = commitBy("commit");
    const out = await moveGroupAB(r, gc, "continue");
    expect(states(out)).toEqual({ a: "failed", b: "aborted" });
    expect(calls).toEqual([]);
    expect(r.log.some((l) => /^(prime|stop|switch) /.test(l))).toBe(false);
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
