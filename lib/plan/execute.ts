/**
 * Runs a plan: waves in order, each wave by the offer's strategy, with the on-error rule.
 * The executor only schedules; moving a VM is the caller's `start` function (a hypervisor
 * migration towards the destination's armed listener), so the same code drives any driver.
 */
import type { Policy } from "../../nrdl/types";
import type { MigrationHandle, MigrationResult } from "../hypervisor/driver";
import { TeleportError } from "../errors";
import type { Plan } from "./waves";

export type VmOutcome =
  | { vm: string; state: "completed"; result: MigrationResult }
  | { vm: string; state: "failed"; reason: string }
  | { vm: string; state: "aborted"; reason: string };

export interface PlanEvents {
  /** A VM's migration started (pre-copy begins). */
  onStart?(vm: string): void;
  /** A VM reached its final state. */
  onOutcome?(outcome: VmOutcome): void;
  /** Switchover strategy: every VM of the group pre-copied and is told to converge and switch over. */
  onSwitchover?(vms: string[]): void;
}

/** The destination's verdict on a group under group commit (NRDL 2 `commit="group"`, SPEC.md). */
export type GroupDecision = { outcome: "commit" } | { outcome: "abort"; reason: string };

/**
 * Group commit, the source's half: once any VM of the group got switchover() (its device state may
 * have left), the source never resumes a VM on its own; only the destination's decision settles them.
 */
export interface GroupCommit {
  /** Every VM of the group stopped (first to last STOP, epoch ms): the destination may announce them. */
  onStopped?(vms: string[], firstStopAt: number, lastStopAt: number): Promise<void> | void;
  /**
   * The destination's decision, after every switchover was sent or the group was called off after
   * some (`calledOff`: why; the destination is told to abort). Resolves only with a decision.
   */
  decision(calledOff?: string): Promise<GroupDecision>;
  /** Apply the decision to one VM here: commit quits the source's stopped copy, abort runs it again. */
  settle(vm: string, decision: GroupDecision): Promise<void>;
}

export interface ExecuteOptions {
  plan: Plan;
  policy: Policy;
  /** Start one VM's migration; `pauseBeforeSwitchover` is set for the switchover strategy. */
  start(vm: string, pauseBeforeSwitchover: boolean): MigrationHandle;
  events?: PlanEvents;
  /** Operator abort (Ctrl-C, console Abort): running migrations are cancelled, the rest stays put. */
  signal?: AbortSignal;
  /** Strategy switchover with a destination that decides for the group (start() then sets awaitCommit). */
  groupCommit?: GroupCommit;
}

function reasonOf(err: unknown): string {
  return TeleportError.from(err).message;
}

/**
 * How long the VMs of a group stopped at the source wait (from the first STOP) for the last one to
 * converge before the switchover is called off (and all resume at the source): the group's pause
 * when one cannot follow.
 */
export function switchoverWindowMs(policy: Policy): number {
  return Math.max(3000, 10 * policy.downtimeLimitMs);
}

/**
 * The downtime limit each VM converges with in a whole-group switchover. The group's pause is the
 * spread of its STOPs plus one final copy per wave (waves are sent one after the other), so each
 * gets an equal share of the limit: the group as a whole, and so every VM in it, stays near it.
 */
export function convergeLimitMs(policy: Policy, waves: number): number {
  return Math.max(10, Math.floor(policy.downtimeLimitMs / (waves + 1)));
}

/** Resolves with `p`'s outcome, or rejects after `ms`. */
function within<T>(p: Promise<T>, ms: number, why: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new TeleportError(504, why)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

class Run {
  readonly outcomes = new Map<string, VmOutcome>();
  private readonly running = new Map<string, MigrationHandle>();
  /** VMs we cancelled on purpose, with why: their failure is reported as "aborted". */
  private readonly cancelled = new Map<string, string>();
  private stopReason: string | undefined;

  constructor(private readonly opts: ExecuteOptions) {
    opts.signal?.addEventListener("abort", () => this.stop("aborted by operator"), { once: true });
    if (opts.signal?.aborted) this.stopReason = "aborted by operator";
  }

  private record(outcome: VmOutcome): void {
    this.outcomes.set(outcome.vm, outcome);
    this.opts.events?.onOutcome?.(outcome);
  }

  /** Cancel one running migration; its VM keeps running at the source. */
  private cancel(vm: string, reason: string): void {
    if (!this.cancelled.has(vm)) this.cancelled.set(vm, reason);
    void this.running
      .get(vm)
      ?.abort()
      .catch(() => undefined);
  }

  /** Stop everything: cancel running migrations, start no more. */
  private stop(reason: string): void {
    if (this.stopReason) return;
    this.stopReason = reason;
    for (const vm of this.running.keys()) this.cancel(vm, reason);
  }

  private fail(vm: string, err: unknown): void {
    const why = this.cancelled.get(vm);
    const outcome: VmOutcome = why
      ? { vm, state: "aborted", reason: why }
      : { vm, state: "failed", reason: reasonOf(err) };
    this.record(outcome);
    if (outcome.state === "failed" && this.opts.policy.onError === "abort") this.stop(`plan aborted: ${vm} failed`);
  }

  /** Why a VM must not start now, if it must not. */
  private blocker(vm: string): string | undefined {
    if (this.stopReason) return this.stopReason;
    for (const dep of this.opts.plan.prerequisites.get(vm) ?? []) {
      const o = this.outcomes.get(dep);
      if (o && o.state !== "completed") return `not moved: ${dep}, which it depends on, did not move`;
    }
    return undefined;
  }

  private launch(vm: string, pause: boolean): MigrationHandle | undefined {
    const blocked = this.blocker(vm);
    if (blocked) {
      this.record({ vm, state: "aborted", reason: blocked });
      return undefined;
    }
    const handle = this.opts.start(vm, pause);
    this.running.set(vm, handle);
    this.opts.events?.onStart?.(vm);
    return handle;
  }

  private async finish(vm: string, handle: MigrationHandle): Promise<void> {
    try {
      const result = await handle.done;
      this.record({ vm, state: "completed", result });
    } catch (err) {
      this.fail(vm, err);
    } finally {
      this.running.delete(vm);
    }
  }

  private async one(vm: string): Promise<void> {
    const handle = this.launch(vm, false);
    if (handle) await this.finish(vm, handle);
  }

  private async pool(vms: string[], width: number): Promise<void> {
    const queue = [...vms];
    const worker = async (): Promise<void> => {
      for (let vm = queue.shift(); vm !== undefined; vm = queue.shift()) await this.one(vm);
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(width, vms.length)) }, worker));
  }

  /**
   * The whole group pre-copies (at most max-parallel in their first pass at once), each VM held
   * running once it could switch over; then all converge and wait stopped at the source, and only
   * when every one is there do they switch over, in dependency order (a wave reaches the
   * destination before the next is sent). Anything short of that: all resume at the source.
   */
  private async group(): Promise<void> {
    const { plan, policy } = this.opts;
    const started: Array<[string, MigrationHandle]> = [];
    const finished: Array<Promise<void>> = [];
    const callOff = (why: string): void => {
      for (const [vm] of started) this.cancel(vm, why);
    };
    // Pre-copy: a VM keeps its slot until it is held (or failed).
    let free = Math.max(1, policy.maxParallel);
    const waiting: Array<() => void> = [];
    const release = (): void => {
      free++;
      waiting.shift()?.();
    };
    const failures: string[] = [];
    const readies: Array<Promise<void>> = [];
    for (const vm of plan.waves.flatMap((w) => w.vms)) {
      if (free === 0) await new Promise<void>((r) => waiting.push(r));
      free--;
      if (failures.length || this.stopReason) {
        release();
        this.record({ vm, state: "aborted", reason: this.stopReason ?? `switchover cancelled: ${failures[0]}` });
        continue;
      }
      const handle = this.launch(vm, true);
      if (!handle) {
        release();
        continue;
      }
      started.push([vm, handle]);
      finished.push(this.finish(vm, handle));
      readies.push(
        handle.readyToSwitch.then(release, (err: unknown) => {
          release();
          if (!this.cancelled.has(vm)) {
            failures.push(`${vm} could not pre-copy (${reasonOf(err)})`);
            callOff(`switchover of the group cancelled: ${failures[0]}`);
          }
          throw err;
        }),
      );
    }
    const ready = await Promise.allSettled(readies);
    const names = started.map(([vm]) => vm);
    if (ready.some((r) => r.status === "rejected") || this.stopReason || started.length < this.groupSize()) {
      callOff(this.stopReason ?? `switchover of the group cancelled: ${failures.join("; ") || "not every VM started"}`);
      await Promise.all(finished);
      return;
    }
    this.opts.events?.onSwitchover?.(names);
    const window = switchoverWindowMs(policy);
    const stops = started.map(([, h]) => h.converge(convergeLimitMs(policy, plan.waves.length)));
    for (const stop of stops) stop.catch(() => undefined); // seen by race/all below; never unhandled
    try {
      // The window bounds the group's pause, so it runs from the first STOP: until then every VM still
      // runs, sending its last pass (bounded by its own timeout), which on a slow link outlasts any window.
      await Promise.race(stops);
      await within(Promise.all(stops), window, `not every VM stopped for switchover within ${window} ms`);
    } catch (err) {
      callOff(`switchover of the group cancelled: ${reasonOf(err)}`);
      await Promise.all(finished);
      return;
    }
    const handles = new Map(started);
    for (const wave of plan.waves) {
      const sent = await Promise.allSettled(wave.vms.map((vm) => (handles.get(vm) as MigrationHandle).switchover()));
      const lost = wave.vms.filter((_, i) => sent[i].status === "rejected");
      if (lost.length) {
        // earlier waves are on the destination already; what depends on the lost ones stays with them
        callOff(`not switched over: ${lost.join(", ")} failed in its switchover`);
        break;
      }
    }
    await Promise.all(finished);
  }

  private groupSize(): number {
    return this.opts.plan.waves.reduce((n, w) => n + w.vms.length, 0);
  }

  async execute(): Promise<VmOutcome[]> {
    const { plan, policy } = this.opts;
    for (const wave of plan.waves) {
      if (policy.strategy === "switchover") {
        await this.group();
        break;
      }
      await this.pool(wave.vms, policy.strategy === "sequential" ? 1 : policy.maxParallel);
    }
    return plan.waves.flatMap((w) => w.vms.map((vm) => this.outcomes.get(vm) as VmOutcome));
  }
}

/** Run the plan to the end; every VM gets exactly one outcome, in plan order. */
export function executePlan(opts: ExecuteOptions): Promise<VmOutcome[]> {
  return new Run(opts).execute();
}
