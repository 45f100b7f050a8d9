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
  /** Switchover strategy: every VM of the wave has converged and is about to switch over. */
  onSwitchover?(wave: number, vms: string[]): void;
}

export interface ExecuteOptions {
  plan: Plan;
  policy: Policy;
  /** Start one VM's migration; `pauseBeforeSwitchover` is set for the switchover strategy. */
  start(vm: string, pauseBeforeSwitchover: boolean): MigrationHandle;
  events?: PlanEvents;
  /** Operator abort (Ctrl-C, console Abort): running migrations are cancelled, the rest stays put. */
  signal?: AbortSignal;
}

function reasonOf(err: unknown): string {
  return TeleportError.from(err).message;
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

  /** Pre-copy the whole wave, then switch every VM over together. */
  private async switchover(wave: number, vms: string[]): Promise<void> {
    const started = vms
      .map((vm) => [vm, this.launch(vm, true)] as const)
      .filter((e): e is [string, MigrationHandle] => !!e[1]);
    const finished = started.map(([vm, h]) => this.finish(vm, h));
    const ready = await Promise.allSettled(started.map(([, h]) => h.readyToSwitch));
    const allReady = ready.every((r) => r.status === "fulfilled");
    if (!allReady) {
      // One VM could not converge: nobody of this wave switches, everybody stays (or resumes) at the source.
      const failed = started.filter((_, i) => ready[i].status === "rejected").map(([vm]) => vm);
      for (const [vm] of started) {
        if (!failed.includes(vm))
          this.cancel(vm, `switchover of wave ${wave + 1} cancelled: ${failed.join(", ")} failed before switchover`);
      }
    } else if (!this.stopReason) {
      this.opts.events?.onSwitchover?.(
        wave,
        started.map(([vm]) => vm),
      );
      await Promise.all(started.map(([, h]) => h.switchover().catch(() => undefined)));
    }
    await Promise.all(finished);
  }

  async execute(): Promise<VmOutcome[]> {
    const { plan, policy } = this.opts;
    for (const wave of plan.waves) {
      if (policy.strategy === "switchover") await this.switchover(wave.index, wave.vms);
      else await this.pool(wave.vms, policy.strategy === "sequential" ? 1 : policy.maxParallel);
    }
    return plan.waves.flatMap((w) => w.vms.map((vm) => this.outcomes.get(vm) as VmOutcome));
  }
}

/** Run the plan to the end; every VM gets exactly one outcome, in plan order. */
export function executePlan(opts: ExecuteOptions): Promise<VmOutcome[]> {
  return new Run(opts).execute();
}
