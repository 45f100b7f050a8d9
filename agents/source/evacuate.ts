/**
 * Evacuate: move every VM running on this host to one or more destinations. Each destination is
 * asked what it can receive (OPTIONS, capacity); groups of VMs tied by depends-on are placed by
 * lib/plan/placement.ts; every destination gets one dialog at a time, the destinations in
 * parallel, each dialog run under the policy as `migrate` runs it. A dry run (OPTIONS with the
 * offer) before each INVITE names the VMs a destination would refuse: those are offered to the
 * next destination, as is everything of a destination whose INVITE is refused or whose migrations
 * fail. Each VM either completed its move or still runs here: nothing is half-moved.
 */
import { TeleportError } from "../../lib/errors";
import type { MigrationProgress } from "../../lib/hypervisor/driver";
import type { Host } from "../../lib/hypervisor/host";
import type { Logger } from "../../lib/log/logger";
import type { VmOutcome } from "../../lib/plan/execute";
import { groupsOf, place, roomOf, take, type Group, type Room } from "../../lib/plan/placement";
import type { SipBackend } from "../../lib/sip/backend";
import type { Offer, Policy, VmSpec } from "../../nrdl/types";
import type { SourceAgent } from "./agent";
import type { SourceEvents } from "./types";
import { askCapacity, type DestinationAnswer } from "./capacity-query";
import { dryRun } from "./dry-run";

export interface EvacuateRequest {
  destinations: string[];
  policy: Policy;
  /** Offers (plans) whose depends-on tie VMs together; VMs they do not link move on their own. */
  links?: Offer[];
  /** Ctrl-C: no new dialog starts, running ones are cancelled (their VMs stay here). */
  signal?: AbortSignal;
}

export interface EvacuationEvents {
  onCapacity?(answer: DestinationAnswer): void;
  onOffer?(uri: string, vms: string[]): void;
  /** `uri` will not get `vms` (refused, failed): they are offered elsewhere if anywhere fits. */
  onRefused?(uri: string, vms: string[], why: string): void;
  /** The destination answered 200 OK: its listeners are armed ("2 listeners armed in 40 ms"). */
  onArmed?(uri: string, detail: string): void;
  onProgress?(uri: string, p: MigrationProgress): void;
  onOutcome?(uri: string, o: VmOutcome): void;
  /** No destination can take this group (any more): it stays here. */
  onUnplaced?(vms: string[], why: string): void;
}

export interface EvacuatedVm {
  vm: string;
  state: "moved" | "stayed" | "not running";
  /** Where it runs now: the destination's URI, or this host's name. */
  runsOn: string;
  /** The destination's host name (from its capacity answer), when it moved. */
  host?: string;
  totalMs?: number;
  downtimeMs?: number;
  /** The stream reductions its move had, as the destination armed them ("zstd", "dedup"); absent: none. */
  reductions?: string[];
  /** Refusals and failures on the way, e.g. "sip:dc3@…: 488 Not Acceptable Here: definition differs". */
  attempts: string[];
  /** Why it stayed. */
  reason?: string;
}

export interface DestinationUse extends DestinationAnswer {
  dialogs: number;
  received: string[];
  /** Why it got nothing more after some point (refused the INVITE, failed every migration). */
  dropped?: string;
}

export interface EvacuationReport {
  host: string;
  /** completed: every running VM moved; partial: some stayed; failed: none moved. */
  outcome: "completed" | "partial" | "failed";
  vms: EvacuatedVm[];
  destinations: DestinationUse[];
}

export interface EvacuationOptions {
  agent: SourceAgent;
  sip: SipBackend;
  host: Host;
  hostName: string;
  logger: Logger;
}

/**
 * What one dialog did: VMs that moved there, VMs it would not or could not take, and whether to drop
 * the destination. VMs of the dialog in neither list were not judged (another VM's refusal in the
 * dry run sent them back): they may be offered to the same destination again.
 */
interface DialogResult {
  moved: Array<Extract<VmOutcome, { state: "completed" }>>;
  /** Per VM, the reductions the destination armed for it (a dialog that armed nothing: absent). */
  reductions?: Map<string, string[]>;
  refused: Array<{ vm: string; why: string }>;
  drop?: string;
}

/** A Warning's text without its code and agent ('399 dc4 "Busy Here; ..."' -> 'Busy Here; ...'). */
const warningText = (w: string) => w.replace(/^\d{3} \S+ "(.*)"$/, "$1");

/** "503 Service Unavailable: ..." from an error, however the backend worded the status line. */
function errorText(e: TeleportError): string {
  const reason = e.reason.replace(/^.* failed: \d{3} /, ""); // "INVITE sip:... failed: 503 Service Unavailable"
  return [`${e.status} ${reason}`, ...e.details.map(warningText)].join(": ");
}

export class Evacuation {
  private readonly log: Logger;

  constructor(private readonly o: EvacuationOptions) {
    this.log = o.logger.child({ agent: "evacuate" });
  }

  async run(req: EvacuateRequest, events: EvacuationEvents = {}): Promise<EvacuationReport> {
    const { host, hostName } = this.o;
    const running: string[] = [];
    const vms = new Map<string, EvacuatedVm>();
    for (const def of host.inventory()) {
      const state = await host.find(def.name)?.driver.state(def.name);
      if (state === "running") running.push(def.name);
      vms.set(def.name, {
        vm: def.name,
        state: state === "running" ? "stayed" : "not running",
        runsOn: hostName,
        attempts: [],
        reason: state === "running" ? undefined : `${state} here, not moved`,
      });
    }
    const uses: DestinationUse[] = [];
    if (running.length === 0)
      return { host: hostName, outcome: "completed", vms: [...vms.values()], destinations: uses };
    // the whole offer once, checked here (every VM running, disks read, no cycle): dialogs take parts of it
    const whole = await this.o.agent.buildOffer({
      to: req.destinations[0],
      plan: this.offerOf(running, req),
    });
    for (const a of await Promise.all(req.destinations.map((uri) => askCapacity(this.o.sip, uri)))) {
      events.onCapacity?.(a);
      uses.push({ ...a, dialogs: 0, received: [], dropped: a.capacity ? undefined : `no capacity: ${a.problem}` });
    }
    const refused = new Map<string, Set<string>>(); // vm -> destinations that will not get it
    const refuse = (uri: string, names: string[], why: string) => {
      for (const vm of names) {
        refused.set(vm, (refused.get(vm) ?? new Set()).add(uri));
        vms.get(vm)?.attempts.push(`${uri}: ${why}`);
      }
      events.onRefused?.(uri, names, why);
    };
    let pending = groupsOf(whole.vms);
    const inFlight = new Map<string, { groups: Group[]; done: Promise<void> }>();
    const moved = new Map<string, Group[]>(); // uri -> what arrived there (counts against its room)
    const roomsNow = (): Room[] =>
      uses.flatMap((u) => {
        if (!u.capacity || u.dropped) return [];
        const taken = [...(moved.get(u.uri) ?? []), ...(inFlight.get(u.uri)?.groups ?? [])];
        return [taken.reduce(take, roomOf(u.uri, u.capacity))];
      });
    const minVersion = req.policy.convergence && req.policy.convergence !== "none" ? 2 : 1;
    let unplaced: Array<{ group: Group; why: string }> = [];
    for (;;) {
      if (!req.signal?.aborted) {
        const placement = place(pending, roomsNow(), { refused: (vm, uri) => !!refused.get(vm)?.has(uri), minVersion });
        unplaced = placement.unplaced;
        for (const { uri, groups } of placement.assigned) {
          if (groups.length === 0 || inFlight.has(uri)) continue;
          pending = pending.filter((g) => !groups.includes(g));
          const use = uses.find((u) => u.uri === uri) as DestinationUse;
          use.dialogs++;
          const names = groups.flatMap((g) => g.vms);
          events.onOffer?.(uri, names);
          const done = this.dialog(uri, whole, names, req, events).then((r) => {
            inFlight.delete(uri);
            for (const m of r.moved) {
              use.received.push(m.vm);
              Object.assign(vms.get(m.vm) as EvacuatedVm, {
                state: "moved",
                runsOn: uri,
                host: use.capacity?.host,
                totalMs: m.result.totalMs,
                downtimeMs: m.result.downtimeMs,
                reductions: r.reductions?.get(m.vm),
                reason: undefined,
              });
            }
            const arrived = groupsOf(whole.vms.filter((v) => r.moved.some((m) => m.vm === v.name)));
            moved.set(uri, [...(moved.get(uri) ?? []), ...arrived]);
            for (const why of new Set(r.refused.map((x) => x.why)))
              refuse(
                uri,
                r.refused.filter((x) => x.why === why).map((x) => x.vm),
                why,
              );
            if (r.drop) use.dropped = r.drop;
            // what did not move goes back to placement, regrouped (a group may have lost members that moved)
            const back = names.filter((n) => !r.moved.some((m) => m.vm === n));
            pending.push(...groupsOf(this.partOf(whole, back).vms));
          });
          inFlight.set(uri, { groups, done });
        }
      }
      if (inFlight.size === 0) break;
      await Promise.race([...inFlight.values()].map((f) => f.done));
    }
    for (const { group, why } of req.signal?.aborted ? [] : unplaced) {
      events.onUnplaced?.(group.vms, why);
      for (const vm of group.vms) (vms.get(vm) as EvacuatedVm).reason = `no destination can take it: ${why}`;
    }
    for (const g of pending)
      for (const vm of g.vms) {
        const v = vms.get(vm) as EvacuatedVm;
        if (req.signal?.aborted) v.reason = "not moved: evacuation aborted";
        else v.reason ??= "not moved";
      }
    const report = [...vms.values()];
    const movedCount = report.filter((v) => v.state === "moved").length;
    const outcome = movedCount === running.length ? "completed" : movedCount === 0 ? "failed" : "partial";
    this.log.info("evacuation finished", { outcome, moved: movedCount, running: running.length });
    return { host: hostName, outcome, vms: report, destinations: uses };
  }

  /** Every running VM as the inventory defines it, tied by the plans' depends-on (within the set). */
  private offerOf(running: string[], req: EvacuateRequest): Offer {
    const deps = new Map<string, Set<string>>(running.map((n) => [n, new Set()]));
    for (const plan of req.links ?? [])
      for (const vm of plan.vms) for (const d of vm.dependsOn) if (deps.has(d)) deps.get(vm.name)?.add(d);
    const vms = running.map((name): VmSpec => {
      const def = this.o.host.find(name)?.def;
      if (!def) throw new TeleportError(404, "unknown VM", [`${name} is not in this host's inventory`]);
      const { hypervisor, role, memoryMib, cpus } = def;
      return { name, hypervisor, role, memoryMib, cpus, dependsOn: [...(deps.get(name) ?? [])], disks: [] };
    });
    return { kind: "offer", sourceUri: this.o.sip.aor, destinationUri: "", policy: req.policy, vms };
  }

  /** The part of `whole` naming `names`, dependencies outside it dropped (they moved already, or elsewhere). */
  private partOf(whole: Offer, names: string[]): Offer {
    const set = new Set(names);
    return {
      ...whole,
      vms: whole.vms
        .filter((v) => set.has(v.name))
        .map((v) => ({ ...v, dependsOn: v.dependsOn.filter((d) => set.has(d)) })),
    };
  }

  /** Dry run, INVITE, migrate, BYE towards one destination; never throws. */
  private async dialog(
    uri: string,
    whole: Offer,
    names: string[],
    req: EvacuateRequest,
    events: EvacuationEvents,
  ): Promise<DialogResult> {
    const offer = { ...this.partOf(whole, names), destinationUri: uri };
    const all = (why: string, drop?: string): DialogResult => ({
      moved: [],
      refused: names.map((vm) => ({ vm, why })),
      drop,
    });
    try {
      const verdict = await dryRun(this.o.sip, uri, offer);
      if (verdict.status < 200 || verdict.status >= 300) {
        const status = `${verdict.status} ${verdict.reason}`;
        const rejected = verdict.preview?.rejected.filter((r) => names.includes(r.vm)) ?? [];
        // a verdict per VM: only those are refused here; the rest may come back in the next dialog
        if (rejected.length)
          return { moved: [], refused: rejected.map((r) => ({ vm: r.vm, why: `${status}: ${r.reason}` })) };
        const why = verdict.warning ? `${status}: ${warningText(verdict.warning)}` : status;
        return all(why, why);
      }
    } catch (err) {
      const why = `dry run failed: ${errorText(TeleportError.from(err))}`;
      return all(why, why);
    }
    if (req.signal?.aborted) return all("evacuation aborted");
    const progress: SourceEvents = {
      onPhase: (phase, detail) => (phase === "armed" ? events.onArmed?.(uri, detail ?? "") : undefined),
      onProgress: (p) => events.onProgress?.(uri, p),
      onOutcome: (o) => events.onOutcome?.(uri, o),
    };
    let call;
    try {
      call = await this.o.agent.call({ to: uri, plan: offer, signal: req.signal }, progress);
    } catch (err) {
      // it said yes to the dry run and no to the INVITE (busy meanwhile, a fault): it gets nothing more
      const why = `INVITE refused: ${errorText(TeleportError.from(err))}`;
      return all(why, why);
    }
    const outcomes: VmOutcome[] = [];
    try {
      if (!req.signal?.aborted) await call.run(req.signal).then((os) => outcomes.push(...os));
    } catch (err) {
      this.log.warn("a dialog's plan failed", { uri, error: TeleportError.from(err).message });
    }
    const summary = await call.bye();
    const moved = outcomes.filter((o): o is DialogResult["moved"][number] => o.state === "completed");
    const stayed = summary.vms.filter((v) => v.state !== "completed" || !moved.some((m) => m.vm === v.vm));
    const refusedHere = stayed.map((v) => ({ vm: v.vm, why: `${v.state}: ${v.reason ?? "did not move"}` }));
    const reductions = new Map<string, string[]>();
    for (const a of call.answer.armed) {
      const had = [a.compress, a.dedup === "on" ? "dedup" : undefined].filter((r): r is string => !!r);
      if (had.length) reductions.set(a.vm, had);
    }
    return {
      moved: moved.filter((m) => summary.vms.some((v) => v.vm === m.vm && v.state === "completed")),
      reductions,
      refused: refusedHere,
      drop: moved.length === 0 ? "moved none of the VMs it accepted" : undefined,
    };
  }
}
