/**
 * Runs a plan: waves in order, each wave by the offer's strategy, with the on-error rule.
 * The executor only schedules; moving a VM is the caller's `start` function (a hypervisor
 * migration towards the destination's armed listener), so the same code drives any driver.
 */
import { crashPoint } from "./crash-point";
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
  /** Switchover strategy: every VM of the group pre-copied and is told to stop and switch over. */
  onSwitchover?(vms: string[]): void;
}

/** The destination's verdict on a group under group commit (NRDL 2 `commit="group"`, SPEC.md). */
export type GroupDecision = { outcome: "commit" } | { outcome: "abort"; reason: string };

/**
 * Group commit, the source's half: once any VM of the group got switchover() (its device state may
 * have left), the source never resumes a VM on its own; only the destination's decision settles them.
 */
export interface GroupCommit {
  /**
   * The group is about to stop: the destination claims its MACs (so that no frame goes to a copy
   * that stops); the stop follows when this settles, which it does within a short bound.
   */
  onStopping?(vms: string[]): Promise<void>;
  /** Every VM of the group stopped (first to last STOP, epoch ms): journaled before any rest is sent. */
  onStopped?(vms: string[], firstStopAt: number, lastStopAt: number): Promise<void> | void;
  /**
   * The destination's decision, after every switchover was sent or the group was called off after
   * some (`calledOff`: why; the destination is told to abort). Resolves only with a decision.
   */
  decision(sent: string[], calledOff?: string): Promise<GroupDecision>;
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
 * How long the group waits for every VM to stop once it told them (QMP stop is immediate; a slow
 * or dead source QEMU is not), before the switchover is called off and all run on at the source.
 */
export function switchoverWindowMs(policy: Policy): number {
  return Math.max(3000, 10 * policy.downtimeLimitMs);
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
  /** Group commit: VMs whose switchover was sent; their outcome is the destination's decision, not their handle's. */
  private readonly committing = new Set<string>();
  /** How the handles of committing VMs ended, for the decision's outcome. */
  private readonly ended = new Map<string, { result: MigrationResult } | { error: unknown }>();

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
    if (this.committing.has(vm)) return; // its switchover was sent: the group's decision settles it
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
      if (this.committing.has(vm)) this.ended.set(vm, { result });
      else this.record({ vm, state: "completed", result });
    } catch (err) {
      if (this.committing.has(vm)) this.ended.set(vm, { error: err });
      else this.fail(vm, err);
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
   * running once it could switch over. Then one coordinated step: all are primed (their migration
   * threads awake), all stopped at once (when every one is primed, or at the first that stopped on
   * its own), and all switched over in parallel. Anything short of every STOP: all run on at the
   * source. With group commit, once switchovers were sent only the destination's decision settles them.
   */
  private async group(): Promise<void> {
    const { policy, groupCommit } = this.opts;
    const group = await this.precopyGroup();
    if (!group) return;
    const { started, finished } = group;
    const names = started.map(([vm]) => vm);
    const handles = started.map(([, h]) => h);
    /** VMs whose own stop or drain failed: their failure is theirs, not the group's cancellation. */
    const failing = new Set<string>();
    const own = <T>(vm: string, p: Promise<T>): Promise<T> =>
      p.catch((err: unknown) => {
        failing.add(vm);
        throw err;
      });
    const callOff = (why: string): Promise<void> => {
      for (const vm of names) if (!failing.has(vm)) this.cancel(vm, why);
      return Promise.all(finished).then(() => undefined);
    };
    if (this.stopReason) return callOff(this.stopReason);
    this.opts.events?.onSwitchover?.(names);
    const window = switchoverWindowMs(policy);
    let stoppedAt: number[];
    let told = false;
    try {
      const primed = Promise.all(handles.map((h) => h.prime()));
      const selfStop = handles.map((h) => h.stopped).filter((p): p is Promise<number> => p !== undefined);
      primed.catch(() => undefined);
      const firstStop = selfStop.map((p) => p.catch(() => new Promise<never>(() => undefined)));
      await Promise.race([primed, ...firstStop]);
      // every VM caught up and held again: all woken together, stopped when all are awake or one stopped
      // itself, and once the destination claimed the group's frames (they then wait in its taps, not in
      // the stopped source's): after the wake, which may take a rate-limit window, so that the claim
      // holds back the group's frames for as short a time as it can
      const woken = Promise.all(handles.map((h) => h.wake?.()));
      woken.catch(() => undefined);
      await Promise.race([woken, ...firstStop]);
      told = !!groupCommit?.onStopping;
      await Promise.race([groupCommit?.onStopping?.(names), ...firstStop]);
      // here, not inside the claim: a VM that stopped itself ends the race before the claim is answered,
      // and a crash point there would let the group be sent past it
      await crashPoint("source:claimed");
      const stops = Promise.all(handles.map((h, i) => own(names[i], h.stop())));
      stoppedAt = await within(stops, window, `not every VM stopped within ${window} ms`);
      // awaited: the source journals the group before any rest leaves (SPEC.md 5.6)
      told = true;
      await groupCommit?.onStopped?.(names, Math.min(...stoppedAt), Math.max(...stoppedAt));
      // none is sent before all can be: a VM whose dirty memory does not get there in time calls the group off
      const there = Promise.all(handles.map((h, i) => h.atSwitchover && own(names[i], h.atSwitchover)));
      await within(there, window, `not every stopped VM was ready to switch over within ${window} ms`);
    } catch (err) {
      const why = `switchover of the group cancelled: ${reasonOf(err)}`;
      // told it stopped, the destination hears at once that nothing of it will come (and announces nothing more)
      if (told) await groupCommit?.decision([], why).catch(() => undefined);
      return callOff(why);
    }
    if (this.stopReason) {
      // called off before any rest left: the destination is told at once (nothing of it may run there)
      await groupCommit?.decision([], this.stopReason).catch(() => undefined);
      return callOff(this.stopReason);
    }
    // from here a VM's device state may leave: under group commit only the decision may run it at the source
    // (one that failed already was resumed at the source by its driver: its own outcome stands)
    const committed = groupCommit ? names.filter((vm) => !this.outcomes.has(vm)) : [];
    for (const vm of committed) this.committing.add(vm);
    const sent = await Promise.allSettled(handles.map((h) => h.switchover()));
    const lost = names.filter((_, i) => sent[i].status === "rejected");
    if (!groupCommit) {
      await Promise.all(finished);
      return;
    }
    const calledOff = lost.length ? `not switched over: ${lost.join(", ")} failed in its switchover` : this.stopReason;
    await Promise.all(finished); // each settles: completed (source kept paused), or failed and paused
    let decision: GroupDecision;
    try {
      decision = await groupCommit.decision(committed, calledOff);
    } catch (err) {
      // no decision: the VMs stay stopped here, journaled for the next start (never resumed blindly)
      for (const vm of committed) this.record({ vm, state: "failed", reason: reasonOf(err) });
      return;
    }
    await Promise.all(committed.map((vm) => this.settle(vm, decision)));
  }

  /**
   * Pre-copy the whole group, a VM keeping its slot until it is held (or failed). Resolves with the
   * held migrations (and their outcomes to come) when every VM of the group is held, else calls
   * them all off (they run on at the source), waits for their outcomes and resolves undefined.
   */
  private async precopyGroup(): Promise<
    { started: Array<[string, MigrationHandle]>; finished: Array<Promise<void>> } | undefined
  > {
    const { plan, policy } = this.opts;
    const started: Array<[string, MigrationHandle]> = [];
    const finished: Array<Promise<void>> = [];
    const callOff = (why: string): void => {
      for (const [vm] of started) this.cancel(vm, why);
    };
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
    if (ready.every((r) => r.status === "fulfilled") && !this.stopReason && started.length === this.groupSize())
      return { started, finished };
    callOff(this.stopReason ?? `switchover of the group cancelled: ${failures.join("; ") || "not every VM started"}`);
    await Promise.all(finished);
    return undefined;
  }

  /** Group commit: a VM whose switchover was sent ends as the destination decided, whatever its handle said. */
  private async settle(vm: string, decision: GroupDecision): Promise<void> {
    const groupCommit = this.opts.groupCommit as GroupCommit;
    const ended = this.ended.get(vm);
    try {
      await groupCommit.settle(vm, decision);
    } catch (err) {
      const reason = `the group's decision (${decision.outcome}) could not be applied here: ${reasonOf(err)}`;
      return this.record({ vm, state: "failed", reason });
    }
    if (decision.outcome === "abort") return this.record({ vm, state: "aborted", reason: decision.reason });
    // the destination runs it: QEMU's figures when the source saw it complete, none when its end was lost
    const result =
      ended && "result" in ended ? ended.result : { vm, totalMs: -1, downtimeMs: -1, transferredBytes: -1 };
    this.record({ vm, state: "completed", result });
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
