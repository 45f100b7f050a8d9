/**
 * The destination's half of group commit (nrdl/SPEC.md 5.6): every VM of the group arrives
 * paused; the group is decided once, written down, then acted on. Its states are the columns of
 * SPEC 5.6's crash-point table:
 *
 *   held      armed, pre-copy running (nothing has arrived whole)
 *   stopped   the source said <switchover>: the group is stopped there; deadline running
 *   arrived   every VM arrived (paused): commit is next
 *   committed commit written; VMs resumed network functions first (one that died is returned)
 *   aborted   abort written; arrived copies removed, listeners disarmed
 *
 * Any VM that cannot arrive, an <abort> from the source, the deadline, the dialog's end or a query
 * from a source that lost its dialog decides the group at once: commit if all arrived, else abort.
 */
import { TeleportError } from "../../lib/errors";
import type { Host } from "../../lib/hypervisor/host";
import type { HypervisorDriver } from "../../lib/hypervisor/driver";
import type { Logger } from "../../lib/log/logger";
import { crashPoint } from "../../lib/plan/crash-point";
import { NETWORK_ROLES } from "../../lib/plan/waves";
import type { Decision, VmSpec } from "../../nrdl/types";
import type { DecisionLog, DecisionRecord } from "./decisions";

/** What acting on a decision needs to know of a VM. */
export type GroupVm = Pick<VmSpec, "name" | "role">;

/**
 * Claims again after <switchover> (ms), while the group is undecided: a source copy answers what it
 * got before the claim for a few ms, and each such frame draws its MAC back until the next claim.
 */
const RECLAIM_AFTER_MS = [3, 6, 10, 15, 25, 40];

export type GroupState = "held" | "stopped" | "arrived" | "committed" | "aborted";

export interface GroupDeciderOptions {
  callId: string;
  migrationId: string;
  caller: string;
  vms: readonly VmSpec[];
  host: Host;
  decisions: DecisionLog;
  log: Logger;
  /** How long the group may take to arrive after <switchover>. */
  arrivalDeadlineMs: number;
  /** How long an arrival may take at all (the dialog's life). */
  arrivalTimeoutMs: number;
  /** Announce the group's MACs from here at <switchover> (migration.announceAtSwitchover). */
  announce: boolean;
  /** Tell the source, best effort (an INFO while the dialog lasts). */
  tell(decision: Decision): void;
}

/** Whether every VM's driver can hold an arrival for the group's decision. */
export function canHoldArrivals(host: Host, vms: readonly VmSpec[]): boolean {
  return vms.every((vm) => {
    const d = host.find(vm.name)?.driver;
    return !!(d?.waitArrived && d.resumeArrived && d.discardArrived);
  });
}

export function decisionOf(rec: Pick<DecisionRecord, "outcome" | "reason" | "returned">): Decision {
  const d: Decision = { kind: "decision", outcome: rec.outcome };
  if (rec.reason) d.reason = rec.reason.slice(0, 1024);
  if (rec.returned?.length) d.returned = rec.returned.join(" ");
  return d;
}

export class GroupDecider {
  state: GroupState = "held";
  private readonly arrived = new Set<string>();
  private decided: Promise<Decision> | undefined;
  private deadline: NodeJS.Timeout | undefined;
  /** Set once abort() starts removing: a copy that arrives from then on is removed as it arrives. */
  private aborting = false;

  constructor(private readonly opts: GroupDeciderOptions) {}

  /** Right after arming: follow every VM's arrival; one that cannot arrive decides the group (abort). */
  watch(): void {
    for (const vm of this.opts.vms) {
      const driver = this.driver(vm.name);
      driver.waitArrived!(vm.name, this.opts.arrivalTimeoutMs).then(
        () => {
          // its rest was on its way when the group was called off: removeGroup may have seen it still
          // loading (or paused, just before QEMU said it completed), so it is removed here
          if (this.aborting) return void this.discardLate(vm);
          this.arrived.add(vm.name);
          this.opts.log.info("arrived, paused for the group's decision", { vm: vm.name });
          if (this.arrived.size === this.opts.vms.length && this.state !== "aborted") void this.decide();
        },
        (err: unknown) => {
          if (this.decided) return;
          void this.decide(`${vm.name} could not arrive: ${TeleportError.from(err).message}`);
        },
      );
    }
  }

  /**
   * <switchover>: the source stops the group as soon as this is answered. The group's MACs are
   * claimed for this host first, so that no frame for it goes to a source copy that is about to
   * stop; claimed again while it is undecided, because a source copy still running for a moment
   * can draw them back with a frame of its own.
   */
  async switchover(): Promise<void> {
    if (this.state !== "held") return;
    this.state = "stopped";
    const ms = this.opts.arrivalDeadlineMs;
    this.deadline = setTimeout(() => void this.decide(`the group did not arrive within ${ms} ms`), ms);
    if (!this.opts.announce) return;
    // (QEMU's own announce cannot help: a paused QEMU holds it back, and sends it when it runs)
    await this.claim();
    for (const after of RECLAIM_AFTER_MS)
      setTimeout(() => {
        if (this.state === "stopped" || this.state === "arrived") void this.claim();
      }, after).unref();
  }

  private async claim(): Promise<void> {
    await Promise.all(this.opts.vms.map((vm) => this.claimOne(vm.name)));
  }

  private async claimOne(vm: string): Promise<void> {
    try {
      await this.driver(vm).claimNetwork?.(vm);
    } catch (err) {
      this.opts.log.warn("could not claim its MACs here", { vm, error: TeleportError.from(err).message });
    }
  }

  /**
   * Decide now (an <abort>, the dialog's end, a query): commit if every VM arrived, else abort.
   * `reason` is why the group is called off when it cannot commit. A decision once made stands.
   */
  decide(reason?: string): Promise<Decision> {
    this.decided ??= this.run(reason);
    return this.decided;
  }

  /** The decision, once it is made. */
  get decision(): Promise<Decision> | undefined {
    return this.decided;
  }

  private async run(reason?: string): Promise<Decision> {
    clearTimeout(this.deadline);
    const all = this.arrived.size === this.opts.vms.length;
    const decision = all ? await this.commit() : await this.abort(reason ?? "called off before the group arrived");
    this.opts.tell(decision);
    return decision;
  }

  private record(outcome: "commit" | "abort", reason?: string): DecisionRecord {
    const { migrationId, callId, caller, vms } = this.opts;
    return this.opts.decisions.write({ migrationId, callId, caller, outcome, reason, vms: vms.map((v) => v.name) });
  }

  private async commit(): Promise<Decision> {
    this.state = "arrived";
    await crashPoint("destination:arrived");
    // an arrived copy that died before the decision makes it abort: its source copy is intact
    const states = await Promise.all(
      this.opts.vms.map((vm) =>
        this.driver(vm.name)
          .state(vm.name)
          .catch(() => "absent" as const),
      ),
    );
    const gone = this.opts.vms.filter((_, i) => states[i] !== "arrived").map((vm) => vm.name);
    if (gone.length) return this.abort(`${gone.join(", ")} arrived but is gone here before the group was decided`);
    const rec = this.record("commit");
    if (rec.outcome !== "commit") return decisionOf(rec); // decided before (a restart): that stands
    await crashPoint("destination:committed");
    this.opts.log.info("group committed: resuming it here", { vms: rec.vms });
    const returned = await resumeGroup(this.opts.host, this.opts.vms, this.opts.log, { checked: true });
    this.state = "committed";
    if (returned.length) rec.returned = returned;
    return decisionOf(rec);
  }

  private async abort(reason: string): Promise<Decision> {
    const rec = this.record("abort", reason);
    if (rec.outcome !== "abort") return decisionOf(rec);
    this.aborting = true;
    this.opts.log.warn("group aborted: removing what arrived", { reason, vms: rec.vms });
    await removeGroup(this.opts.host, this.opts.vms, this.opts.log);
    this.state = "aborted";
    return decisionOf(rec);
  }

  private async discardLate(vm: GroupVm): Promise<void> {
    this.opts.log.warn("arrived after the group was aborted: removing it", { vm: vm.name });
    await removeGroup(this.opts.host, [vm], this.opts.log);
  }

  private driver(vm: string): HypervisorDriver {
    const d = this.opts.host.find(vm)?.driver;
    if (!d) throw new TeleportError(404, `VM ${vm} is not defined on this host`);
    return d;
  }
}

/**
 * Commit: run every arrived VM, network functions first, each tier back to back. A copy that cannot
 * be run is removed and returned (it never ran here; its stopped source copy holds the same state).
 * Safe to call again after a restart: a VM already running is left as it is.
 */
export async function resumeGroup(
  host: Host,
  vms: readonly GroupVm[],
  log: Logger,
  opts: { checked?: boolean } = {},
): Promise<string[]> {
  const returned: string[] = [];
  const tiers = [vms.filter((v) => NETWORK_ROLES.has(v.role)), vms.filter((v) => !NETWORK_ROLES.has(v.role))];
  for (const [i, tier] of tiers.entries()) {
    if (i > 0 && tiers[0].length > 0) await crashPoint("destination:resuming");
    await Promise.all(
      tier.map(async (vm) => {
        const driver = host.find(vm.name)?.driver;
        if (!driver?.resumeArrived) return void returned.push(vm.name);
        try {
          // it says when it is not arrived (and leaves one that runs); `checked`: commit() just saw it arrived
          await driver.resumeArrived(vm.name, opts);
        } catch (err) {
          if ((await driver.state(vm.name).catch(() => "absent")) === "running") return;
          log.error("an arrived VM could not run here: giving it back to the source", {
            vm: vm.name,
            error: TeleportError.from(err).message,
          });
          // never leave it paused here as well as at the source
          await driver.discardArrived?.(vm.name).catch(() => undefined);
          returned.push(vm.name);
        }
      }),
    );
  }
  return returned;
}

/** Abort: remove every arrived copy and disarm every listener; a VM running here is never touched. */
export async function removeGroup(host: Host, vms: readonly GroupVm[], log: Logger): Promise<void> {
  await Promise.all(
    vms.map(async (vm) => {
      const driver = host.find(vm.name)?.driver;
      if (!driver) return;
      const state = await driver.state(vm.name).catch(() => "absent" as const);
      try {
        if (state === "arrived") await driver.discardArrived?.(vm.name);
        else if (state === "running") log.error("a VM of an aborted group runs here: leaving it", { vm: vm.name });
        else if (state !== "absent" && state !== "stopped") await driver.disarm(vm.name);
      } catch (err) {
        log.error("could not remove a VM of an aborted group", { vm: vm.name, error: TeleportError.from(err).message });
      }
    }),
  );
}
