/**
 * The destination agent (UAS): validates an NRDL offer, arms a listener for every VM, and only
 * then answers 200 OK with the armed URIs and one-time secrets. Anything that ends the dialog
 * before a VM resumed here (no ACK, CANCEL, BYE, silence, expiry, a crash) disarms it; a VM
 * that resumed here is never touched.
 */
import { randomBytes } from "node:crypto";
import type { HostConfig } from "../../lib/config/schema";
import { TeleportError } from "../../lib/errors";
import type { Host, LocalVm } from "../../lib/hypervisor/host";
import type { Logger } from "../../lib/log/logger";
import { freePortInRange } from "../../lib/net/ports";
import type {
  Dialog,
  IncomingRequest,
  InviteResponder,
  RequestRefusal,
  Responder,
  SipBackend,
  SipBody,
} from "../../lib/sip/backend";
import { buildNrdl, formatViolation, humanText, parseNrdl } from "../../nrdl";
import type {
  Answer,
  Armed,
  Decision,
  NrdlDocument,
  Offer,
  Rejected,
  Report,
  VmResult,
  VmStatus,
} from "../../nrdl/types";
import type { StatusReport } from "../../nrdl/types";
import { NRDL_MIME } from "../../nrdl/types";
import type { AgentMetrics } from "../../lib/metrics/metrics";
import { capacityOf, resources, shortageRejections, shortages } from "./capacity";
import { CallerGate, loggedDetails, Overload, type Admitted } from "../../lib/access/gate";
import type { DialogAdmission } from "../../lib/access/in-dialog";
import { Journal, type JournalEntry } from "./journal";
import { DecisionLog } from "./decisions";
import { streamReductionOf } from "../../lib/plan/compress";
import { acceptReductions } from "../../lib/plan/dedup";
import { DedupRebuilder } from "../../lib/dedup/rebuild";
import { canHoldArrivals, decisionOf, GroupDecider, removeGroup, resumeGroup } from "./group-decider";

export interface DestinationOptions {
  config: HostConfig;
  sip: SipBackend;
  host: Host;
  logger: Logger;
  /** Prometheus metrics (`listen --metrics`), when exported. */
  metrics?: AgentMetrics;
}

type Phase = "arming" | "answered" | "acked" | "ended";

interface DialogState {
  callId: string;
  migrationId: string;
  /** The offer's NRDL version: every document of the dialog carries it. */
  version: number;
  offer: Offer;
  phase: Phase;
  /** Digest user that opened the dialog: in-dialog requests must come from the same one. */
  user?: string;
  /** What admitted the INVITE (address, certificate, proxy assertion): INFO and BYE must prove it too. */
  admission: DialogAdmission;
  /** Who the dialogs-per-caller limit counts against (lib/access/identity.ts `callerOf`). */
  caller: string;
  armed: Set<string>;
  statuses: Map<string, VmStatus>;
  /**
   * VMs seen running here after the source reported them moved: their only copy is here. The
   * dialog's end never disarms one of them, whatever it finds (a paused guest is still the VM).
   */
  ranHere: Set<string>;
  dialog?: Dialog;
  idleTimer?: NodeJS.Timeout;
  expiryTimer?: NodeJS.Timeout;
  lastReport?: Report;
  /** Group commit (SPEC.md 5.6): arrivals are held, and this host decides the group. */
  groupCommit: boolean;
  group?: GroupDecider;
  /** Group page dedup (SPEC.md 5.8): the dialog's index, shared by its VMs armed with dedup="on". */
  dedup?: DedupRebuilder;
}

/** The Warning header the backend puts on INVITE refusals, for answers we build ourselves. */
function warningOf(host: string, e: TeleportError): string {
  const text = [e.reason, ...e.details]
    .join("; ")
    .replace(/["\\]/g, "'")
    .replace(/[\r\n]+/g, " ");
  return `399 ${host} "${text.slice(0, 1000)}"`;
}

const nrdlBody = (doc: NrdlDocument): SipBody => ({ contentType: NRDL_MIME, content: buildNrdl(doc) });

export class DestinationAgent {
  private readonly dialogs = new Map<string, DialogState>();
  /** VM name -> Call-ID of the dialog that holds it (armed or moving). */
  private readonly holders = new Map<string, string>();
  private readonly gate: CallerGate;
  /** INVITEs the backend's `admit` hook let in, for onInvite (the same request object). */
  private readonly passes = new WeakMap<IncomingRequest, Admitted>();
  private readonly journal: Journal;
  private readonly decisions: DecisionLog;
  private readonly log: Logger;

  constructor(private readonly opts: DestinationOptions) {
    this.log = opts.logger.child({ agent: "destination" });
    this.gate = new CallerGate(opts.config);
    this.journal = new Journal(opts.config.stateDir);
    this.decisions = new DecisionLog(opts.config.stateDir);
  }

  async start(): Promise<void> {
    await this.recover();
    const metrics = this.opts.metrics;
    if (metrics) this.opts.sip.onTrace((e) => metrics.observe(e));
    this.opts.sip.setHandlers({
      onInvite: (req, res) =>
        void this.onInvite(req, res).catch((err: unknown) => {
          // never let one dialog's failure take the agent down
          this.log.error("INVITE handling failed", { callId: req.callId, error: String(err) });
        }),
      onOptions: (req, res) =>
        void this.onOptions(req, res).catch((err: unknown) => {
          this.log.error("OPTIONS handling failed", { callId: req.callId, error: String(err) });
          res.send(500, "Server Internal Error");
        }),
      admit: (req) => this.admitInvite(req),
      authorize: (req) => this.authorizeInDialog(req),
    });
    await this.opts.sip.start();
    if (this.opts.config.sip.registrar) await this.opts.sip.register();
    this.log.info("listening", { aor: this.opts.sip.aor, vms: this.opts.host.inventory().map((v) => v.name) });
  }

  async stop(): Promise<void> {
    for (const state of [...this.dialogs.values()]) await this.finish(state, "agent stopping");
    if (this.opts.config.sip.registrar) await this.opts.sip.unregister().catch(() => undefined);
    await this.opts.sip.stop();
    this.journal.close();
  }

  /** After a crash: disarm listeners of dialogs that no longer exist; keep VMs that resumed here. */
  private async recover(): Promise<void> {
    for (const entry of this.journal.all()) {
      if (entry.commit === "group") {
        await this.finishGroup(entry);
        this.journal.remove(entry.callId);
        continue;
      }
      for (const vm of entry.vms) {
        const local = this.opts.host.find(vm);
        if (!local) continue;
        const state = await local.driver.state(vm).catch(() => "absent" as const);
        if (state === "running") {
          this.log.info("recovered: VM resumed here before the restart, keeping it", {
            vm,
            migrationId: entry.migrationId,
          });
          // what the dead agent would have done on RESUME: drop the listener's leftovers (its migration key)
          await this.settleArrived(local, vm, "a recovered VM");
        } else if (state !== "absent" && state !== "stopped") {
          this.log.warn("recovered: disarming orphaned listener", { vm, state, migrationId: entry.migrationId });
          await local.driver
            .disarm(vm)
            .catch((err: unknown) => this.log.error("disarm failed", { vm, error: String(err) }));
        }
      }
      this.journal.remove(entry.callId);
    }
  }

  /**
   * A group-commit dialog the agent had open when it died (SPEC.md 5.6): `commit` written, every VM
   * of it runs here; anything else is aborted (written first), its arrived copies removed.
   */
  private async finishGroup(entry: JournalEntry): Promise<void> {
    const vms = entry.vms.flatMap((name) => {
      const local = this.opts.host.find(name);
      return local ? [{ name, role: local.def.role }] : [];
    });
    const rec =
      this.decisions.get(entry.migrationId) ??
      this.decisions.write({
        migrationId: entry.migrationId,
        callId: entry.callId,
        caller: entry.caller ?? "",
        outcome: "abort",
        reason: "the destination agent restarted before the group was decided",
        vms: entry.vms,
      });
    this.log.warn(`recovered: finishing group ${entry.migrationId} from the journal: ${rec.outcome}`, {
      vms: entry.vms,
    });
    if (rec.outcome === "commit") await resumeGroup(this.opts.host, vms, this.log);
    else await removeGroup(this.opts.host, vms, this.log);
  }

  /**
   * A new INVITE's caller checks, before the backend keeps any transaction: a stranger's refusal
   * (403, 401, 503) is sent once, statelessly. Admitted INVITEs go on to onInvite.
   */
  private admitInvite(req: IncomingRequest): RequestRefusal | undefined {
    if (req.method !== "INVITE") return undefined;
    try {
      this.passes.set(req, this.admitCaller(req));
      return undefined;
    } catch (err) {
      const e = TeleportError.from(err);
      this.log.warn("INVITE refused", {
        callId: req.callId,
        status: e.status,
        reason: e.reason,
        details: e.details,
        from: req.fromUri,
        address: req.source.address,
      });
      this.opts.metrics?.refused(e.status);
      return { error: e, headers: this.refusalHeaders(e) };
    }
  }

  /** The gate (TLS, rate, digest, allowlist; lib/access/gate.ts), then the caller's open dialogs. Throws. */
  private admitCaller(req: IncomingRequest): Admitted {
    const admitted = this.gate.admit(req);
    const { caller } = admitted;
    const open = [...this.dialogs.values()].filter((d) => d.caller === caller).length;
    const limit = this.opts.config.limits.dialogsPerCaller;
    if (open >= limit) throw new Overload(5, `${caller} already holds ${open} open dialogs (limit ${limit})`);
    return admitted;
  }

  /** The NRDL offer an admitted INVITE or dry run carries; throws 415/400. */
  private offerOf(req: IncomingRequest): NrdlDocument<Offer> {
    if (!req.body || req.body.contentType.split(";")[0].trim().toLowerCase() !== NRDL_MIME) {
      throw new TeleportError(415, "Unsupported Media Type", [
        `body must be ${NRDL_MIME}, got ${req.body?.contentType ?? "no body"}`,
      ]);
    }
    const parsed = parseNrdl(req.body.content);
    if (!parsed.ok) throw new TeleportError(400, "Invalid NRDL", parsed.violations.map(formatViolation));
    if (parsed.doc.body.kind !== "offer")
      throw new TeleportError(400, "Invalid NRDL", [`an INVITE carries an <offer>, not <${parsed.doc.body.kind}>`]);
    return parsed.doc as NrdlDocument<Offer>;
  }

  /** INFO and BYE: held to what admitted the INVITE (lib/access/gate.ts `inDialog`). A refusal changes nothing. */
  private authorizeInDialog(req: IncomingRequest): RequestRefusal | undefined {
    const state = this.dialogs.get(req.callId);
    if (!state) return undefined; // not ours: the core answers 481
    try {
      this.gate.inDialog(req, state);
      return undefined;
    } catch (err) {
      const error = TeleportError.from(err);
      this.log.warn(`${req.method} refused`, {
        callId: req.callId,
        status: error.status,
        details: loggedDetails(error),
      });
      return { error, headers: this.refusalHeaders(error) };
    }
  }

  private refusalHeaders(e: TeleportError): Record<string, string | string[]> {
    const headers = this.gate.headers(e);
    if (e.status === 415) headers["Accept"] = NRDL_MIME;
    return headers;
  }

  /**
   * Per-VM refusals (488: definitions, hypervisor, state here, and the host's free memory, disk and
   * migration ports) and conflicts with other dialogs (486). INVITE and dry run both decide here.
   */
  private async vet(offer: Offer): Promise<{ rejected: Rejected[]; ports: number[] }> {
    const busy = offer.vms.filter((v) => this.holders.has(v.name)).map((v) => v.name);
    if (busy.length)
      throw new TeleportError(
        486,
        "Busy Here",
        busy.map((vm) => `${vm} is being moved by another dialog`),
      );
    const rejected: Rejected[] = [];
    for (const vm of offer.vms) {
      const local = this.opts.host.find(vm.name);
      if (!local) {
        rejected.push({ vm: vm.name, reason: "not defined on this host" });
        continue;
      }
      const { def, driver } = local;
      const mismatch = [
        def.hypervisor !== vm.hypervisor && `hypervisor ${vm.hypervisor} offered, ${def.hypervisor} defined here`,
        def.memoryMib !== vm.memoryMib && `memory ${vm.memoryMib} MiB offered, ${def.memoryMib} MiB defined here`,
        def.cpus !== vm.cpus && `${vm.cpus} cpus offered, ${def.cpus} defined here`,
      ].filter((m): m is string => typeof m === "string");
      if (mismatch.length) {
        rejected.push({ vm: vm.name, reason: `definition differs: ${mismatch.join("; ")}` });
        continue;
      }
      const avail = await driver.available();
      if (!avail.ok) {
        rejected.push({ vm: vm.name, reason: `${driver.kind} unavailable: ${avail.detail}` });
        continue;
      }
      const diskProblems = driver.vetDisks
        ? await driver.vetDisks(vm.name, vm.disks)
        : vm.disks
            .filter((d) => d.mode !== "shared")
            .map((d) => `disk ${d.target}: ${driver.kind} cannot receive copied disks`);
      if (diskProblems.length) {
        rejected.push({ vm: vm.name, reason: diskProblems.join("; ") });
        continue;
      }
      const state = await driver.state(vm.name);
      if (state !== "absent" && state !== "stopped") {
        rejected.push({ vm: vm.name, reason: `already ${state} on this host` });
        continue;
      }
      const unfit = await driver.checkIncoming?.(vm.name);
      if (unfit) rejected.push({ vm: vm.name, reason: unfit });
    }
    const have = await resources(this.opts.config, offer.vms.length);
    const short = shortageRejections(offer, shortages(offer, have, this.opts.config));
    for (const r of short) if (!rejected.some((x) => x.vm === r.vm)) rejected.push(r);
    return { rejected, ports: have.ports };
  }

  /**
   * OPTIONS (RFC 3261 11.2: answered with the status an INVITE would get). Without a body: this
   * host's capacity. With an NRDL offer: a dry run through the INVITE's own checks (admit, vet)
   * that answers what would be armed or refused, and arms, starts and writes nothing.
   */
  private async onOptions(req: IncomingRequest, res: Responder): Promise<void> {
    const log = this.log.child({ callId: req.callId });
    const refuse = (err: unknown, body?: SipBody) => {
      const e = TeleportError.from(err);
      log.warn("OPTIONS refused", { status: e.status, reason: e.reason, details: loggedDetails(e), from: req.fromUri });
      const headers = { ...this.refusalHeaders(e), Warning: warningOf(this.opts.config.host, e) };
      res.send(e.status, e.reason, { headers, body });
    };
    if (!req.body) {
      try {
        this.gate.identify(req); // TLS, digest and the allowlist as for an INVITE; a capacity query is not counted
      } catch (err) {
        return refuse(err);
      }
      const accept = req.header("Accept") ?? "";
      if (!accept.toLowerCase().includes(NRDL_MIME)) return res.send(200, "OK");
      const capacity = await capacityOf(this.opts.config, this.opts.host);
      return res.send(200, "OK", { body: nrdlBody({ version: 1, id: "capacity", body: capacity }) });
    }
    const query = parseNrdl(req.body.content);
    if (query.ok && query.doc.body.kind === "decision-query") {
      try {
        const decision = await this.answerQuery(query.doc.id, this.gate.identify(req).caller);
        log.info("decision query answered", { migrationId: query.doc.id, outcome: decision.outcome });
        const body = nrdlBody({ version: query.doc.version, id: query.doc.id, body: decision });
        return res.send(200, "OK", { body });
      } catch (err) {
        return refuse(err);
      }
    }
    let doc: NrdlDocument<Offer>;
    let verdict: { rejected: Rejected[]; ports: number[] };
    try {
      this.admitCaller(req);
      doc = this.offerOf(req);
      verdict = await this.vet(doc.body);
    } catch (err) {
      return refuse(err);
    }
    const { address, dedupIndexPages } = this.opts.config.migration;
    const groupCommit = this.agreesGroupCommit(doc);
    const accepted = doc.body.vms
      .filter((vm) => !verdict.rejected.some((r) => r.vm === vm.name))
      .map((vm, i) => {
        const driver = this.opts.host.find(vm.name)?.driver;
        const { compress, dedup } = acceptReductions(doc.body, driver, groupCommit, dedupIndexPages);
        const uri = `tcp:${address}:${verdict.ports[i]}`;
        return { vm: vm.name, uri, ...(compress ? { compress } : {}), ...(dedup ? { dedup } : {}) };
      });
    const preview = nrdlBody({
      version: doc.version,
      id: doc.id,
      body: { kind: "preview", accepted, rejected: verdict.rejected },
    });
    log.info("dry run answered", { migrationId: doc.id, refused: verdict.rejected.length });
    if (verdict.rejected.length)
      return refuse(
        new TeleportError(
          488,
          "Not Acceptable Here",
          verdict.rejected.map((r) => `${r.vm}: ${r.reason}`),
        ),
        preview,
      );
    res.send(200, "OK", { body: preview });
  }

  /**
   * A source that lost its dialog asks what became of its group (SPEC.md 5.6): a group still open
   * here is decided now; only the caller that opened the dialog may ask.
   */
  private async answerQuery(migrationId: string, caller: string): Promise<Decision> {
    const open = [...this.dialogs.values()].find((d) => d.migrationId === migrationId && d.group);
    const owner = open?.caller ?? this.decisions.get(migrationId)?.caller;
    if (owner === undefined) return { kind: "decision", outcome: "unknown" };
    if (owner !== caller)
      throw new TeleportError(403, "Forbidden", [`migration ${migrationId} was not opened by ${caller}`]);
    if (open?.group) return open.group.decide("the source asked from outside the dialog: it lost it");
    return decisionOf(this.decisions.get(migrationId)!);
  }

  private async onInvite(req: IncomingRequest, res: InviteResponder): Promise<void> {
    const log = this.log.child({ callId: req.callId });
    // CANCEL may come at any await below: listen from the first instant
    let cancelled = false;
    res.onCancel(() => {
      cancelled = true;
      log.info("CANCEL received");
    });
    let admitted: Admitted & { doc: NrdlDocument<Offer> };
    try {
      // a backend's admit hook has already judged the caller; the offer is judged in the transaction
      admitted = { ...(this.passes.get(req) ?? this.admitCaller(req)), doc: this.offerOf(req) };
    } catch (err) {
      const e = TeleportError.from(err);
      log.warn("INVITE refused", {
        status: e.status,
        reason: e.reason,
        details: loggedDetails(e),
        from: req.fromUri,
        address: req.source.address,
      });
      if (!cancelled) res.reject(e, { headers: this.refusalHeaders(e) });
      this.opts.metrics?.refused(cancelled ? 487 : e.status);
      return;
    }
    const { doc, user, admission, caller } = admitted;
    const offer = doc.body;
    let rejected: Rejected[];
    const vetAt = performance.now(); // where INVITE->200 goes: the answer's log says (vet, arming)
    try {
      ({ rejected } = await this.vet(offer));
    } catch (err) {
      const e = TeleportError.from(err);
      log.warn("INVITE refused", { status: e.status, reason: e.reason, details: e.details });
      if (!cancelled) res.reject(e);
      this.opts.metrics?.refused(cancelled ? 487 : e.status);
      return;
    }
    if (cancelled) return void this.opts.metrics?.dialogEnded("cancelled", 487);
    if (rejected.length) {
      log.warn("INVITE refused: VMs not acceptable", { rejected });
      this.opts.metrics?.refused(488);
      return res.reject(
        new TeleportError(
          488,
          "Not Acceptable Here",
          rejected.map((r) => `${r.vm}: ${r.reason}`),
        ),
        {
          body: nrdlBody({ version: doc.version, id: doc.id, body: { kind: "answer", armed: [], rejected } }),
        },
      );
    }
    // A race between vet() and here is impossible for the same VM: check and take in one synchronous step.
    const clash = offer.vms.find((v) => this.holders.has(v.name));
    if (clash) {
      this.opts.metrics?.refused(486);
      return res.reject(new TeleportError(486, "Busy Here", [`${clash.name} is being moved by another dialog`]));
    }
    const groupCommit = this.agreesGroupCommit(doc);
    const { dedupIndexPages, dedupDeflate } = this.opts.config.migration;
    // the links deflated when the source can and this host wants it (its CPU for the link's bytes)
    const inflate = offer.policy.dedupLink === "deflate" && dedupDeflate;
    const state: DialogState = {
      callId: req.callId,
      migrationId: doc.id,
      version: doc.version,
      offer,
      groupCommit,
      phase: "arming",
      user,
      admission,
      caller,
      armed: new Set(),
      statuses: new Map(),
      ranHere: new Set(),
      // dedup only under group commit (its moves run without QEMU's return path), bounded by this host's cap
      dedup:
        offer.policy.dedup === "on" && groupCommit && dedupIndexPages > 0
          ? new DedupRebuilder(dedupIndexPages, undefined, inflate)
          : undefined,
    };
    offer.vms.forEach((v) => this.holders.set(v.name, req.callId));
    this.dialogs.set(req.callId, state);
    this.journal.add({
      callId: req.callId,
      migrationId: doc.id,
      vms: offer.vms.map((v) => v.name),
      armedAt: new Date().toISOString(),
      ...(groupCommit ? { commit: "group" as const, caller } : {}),
    });

    const armAt = performance.now();
    const armedList = await this.armAll(state, log);
    if (cancelled) {
      await this.finish(state, "cancelled by the caller");
      return void this.opts.metrics?.dialogEnded("cancelled", 487);
    }
    if ("failed" in armedList) {
      await this.finish(state, "arming failed");
      this.opts.metrics?.refused(500);
      return res.reject(
        new TeleportError(
          500,
          "Arming Failed",
          armedList.failed.map((r) => `${r.vm}: ${r.reason}`),
        ),
        {
          body: nrdlBody({
            version: doc.version,
            id: doc.id,
            body: { kind: "answer", armed: [], rejected: armedList.failed },
          }),
        },
      );
    }
    const answer: Answer = { kind: "answer", armed: armedList.armed, rejected: [] };
    if (state.dedup && answer.armed.some((a) => a.dedup === "on")) {
      answer.dedupPages = state.dedup.stats.capPages;
      if (state.dedup.inflate) answer.dedupLink = "deflate";
    }
    // a source that asked learns either way (one that did not may predate the attribute)
    if (offer.policy.commit !== undefined) answer.commit = groupCommit ? "group" : "source";
    const { dialog, acked } = res.accept(nrdlBody({ version: doc.version, id: doc.id, body: answer }));
    state.phase = "answered";
    state.dialog = dialog;
    if (groupCommit) this.holdGroup(state, log);
    log.info("armed and answered", {
      migrationId: doc.id,
      vms: armedList.armed.map((a) => ({ vm: a.vm, uri: a.uri })),
      ms: { vet: Math.round(armAt - vetAt), arm: Math.round(performance.now() - armAt) },
    });
    dialog.onInfo((r, rs) => void this.onInfo(state, r, rs));
    dialog.onBye((_r, rs) => void this.onBye(state, rs));
    dialog.onTerminated((why) => void this.finish(state, `dialog ended: ${why}`));
    const timeoutS = Math.max(offer.policy.timeoutS * Math.max(1, offer.vms.length) + 60, 60);
    state.expiryTimer = setTimeout(
      () => void this.expire(state, `dialog expired after ${timeoutS} s`),
      Math.min(timeoutS, this.opts.config.timers.sessionTimeoutS) * 1000,
    );
    acked.then(
      () => {
        state.phase = "acked";
        this.touch(state);
      },
      () => void this.expire(state, "no ACK for our 200 OK"),
    );
  }

  /** Group commit only when asked for and every VM's driver can hold its arrival (SPEC.md 5.6). */
  private agreesGroupCommit(doc: NrdlDocument<Offer>): boolean {
    const { policy, vms } = doc.body;
    return (
      doc.version >= 2 &&
      policy.strategy === "switchover" &&
      policy.commit === "group" &&
      canHoldArrivals(this.opts.host, vms)
    );
  }

  /** Group commit: every arrival waits paused; this dialog's GroupDecider runs all or none (SPEC.md 5.6). */
  private holdGroup(state: DialogState, log: Logger): void {
    const { policy } = state.offer;
    state.group = new GroupDecider({
      callId: state.callId,
      migrationId: state.migrationId,
      caller: state.caller,
      vms: state.offer.vms,
      host: this.opts.host,
      decisions: this.decisions,
      log,
      arrivalDeadlineMs: Math.max(10_000, 20 * policy.downtimeLimitMs),
      arrivalTimeoutMs: this.opts.config.timers.sessionTimeoutS * 1000,
      announce: this.opts.config.migration.announceAtSwitchover,
      tell: (decision) => this.tell(state, decision),
    });
    state.group.watch();
  }

  /** The group's decision to the source, in an INFO while the dialog lasts (the source may also ask). */
  private tell(state: DialogState, decision: Decision): void {
    if (state.phase === "ended" || !state.dialog) return;
    const body = nrdlBody({ version: state.version, id: state.migrationId, body: decision });
    state.dialog.info(body).catch((err: unknown) =>
      this.log.warn("the source did not take the group's decision", {
        callId: state.callId,
        outcome: decision.outcome,
        error: TeleportError.from(err).message,
      }),
    );
  }

  private async armAll(state: DialogState, log: Logger): Promise<{ armed: Armed[] } | { failed: Rejected[] }> {
    const { address, ports } = this.opts.config.migration;
    const taken = new Set<number>();
    const results = await Promise.allSettled(
      state.offer.vms.map(async (vm): Promise<Armed> => {
        const local = this.opts.host.find(vm.name);
        if (!local) throw new TeleportError(488, "not defined on this host");
        // a port of the range no other VM of this dialog holds; another one if a bind finds it taken
        const anotherPort = async (): Promise<number | undefined> => {
          const p = await freePortInRange(address, ports, taken);
          if (p !== undefined) taken.add(p);
          return p;
        };
        const port = await anotherPort();
        if (port === undefined) throw new TeleportError(503, `no free migration port in ${ports}`);
        const secret = randomBytes(32).toString("base64url");
        const copies = vm.disks.some((d) => d.mode !== "shared");
        // copied disks: one NBD server per VM, with a one-time secret of its own, from the same port range
        const nbdPort = copies ? await anotherPort() : undefined;
        if (copies && nbdPort === undefined) throw new TeleportError(503, `no free NBD port in ${ports}`);
        const nbdSecret = copies ? randomBytes(32).toString("base64url") : undefined;
        // the source's first offered method this driver can do, or the plain stream (nrdl/SPEC.md 5.7);
        // dedup when offered and the dialog holds an index, with only the methods that go with it (5.8)
        const cap = state.dedup?.stats.capPages ?? 0;
        const { dedup, ...reduction } = acceptReductions(state.offer, local.driver, state.groupCommit, cap);
        // marked armed before arming ends: a failure half-way must still be disarmed (images deleted)
        state.armed.add(vm.name);
        this.opts.metrics?.armedChanged(1);
        const listener = await local.driver.arm(vm.name, {
          address,
          port,
          anotherPort,
          secret,
          disks: vm.disks,
          nbdPort,
          nbdSecret,
          postcopy: state.offer.policy.convergence === "postcopy",
          holdOnArrival: state.groupCommit,
          compress: streamReductionOf(reduction),
          dedup: dedup ? state.dedup : undefined,
        });
        const accepted = { ...reduction, ...(dedup ? { dedup } : {}) };
        return { vm: vm.name, uri: listener.uri, secret, exports: listener.exports, ...accepted };
      }),
    );
    const failed = results.flatMap((r, i) =>
      r.status === "rejected"
        ? [{ vm: state.offer.vms[i].name, reason: humanText(TeleportError.from(r.reason).message) }]
        : [],
    );
    if (failed.length) {
      log.error("arming failed", { failed });
      return { failed };
    }
    return { armed: results.map((r) => (r as PromiseFulfilledResult<Armed>).value) };
  }

  /** Silence from the source: after idleTimeoutS without INFO, give up on what has not moved. */
  private touch(state: DialogState): void {
    clearTimeout(state.idleTimer);
    state.idleTimer = setTimeout(
      () => void this.expire(state, `no news from the source for ${this.opts.config.timers.idleTimeoutS} s`),
      this.opts.config.timers.idleTimeoutS * 1000,
    );
  }

  private async onInfo(state: DialogState, req: IncomingRequest, res: Responder): Promise<void> {
    const parsed = req.body ? parseNrdl(req.body.content) : undefined;
    const kind = parsed?.ok ? parsed.doc.body.kind : undefined;
    const kinds = ["status", "recover", "switchover", "abort"];
    if (!parsed?.ok || !kinds.includes(kind ?? "")) {
      const why =
        parsed && !parsed.ok
          ? parsed.violations.map(formatViolation).join("; ")
          : "INFO must carry an NRDL <status>, <recover>, <switchover> or <abort>";
      return res.send(400, "Invalid NRDL", {
        headers: { Warning: `399 sip-teleport "${why.slice(0, 200).replace(/"/g, "'")}"` },
      });
    }
    this.touch(state);
    const body = parsed.doc.body;
    if (body.kind === "recover") return this.onRecover(state, body.vm, res);
    if (body.kind === "switchover" || body.kind === "abort") {
      if (!state.group)
        return res.send(409, "Conflict", {
          headers: { Warning: `399 sip-teleport "this dialog did not agree on commit=group (SPEC.md 5.6)"` },
        });
      if (body.kind === "switchover") {
        // answered once the group's MACs are claimed here: the source stops the group on the answer
        await state.group.switchover();
        return res.send(200, "OK");
      }
      this.log.warn("the source calls the group off", { callId: state.callId, reason: body.reason });
      const decision = await state.group.decide(`the source called it off: ${body.reason}`);
      return res.send(200, "OK", { body: nrdlBody({ version: state.version, id: state.migrationId, body: decision }) });
    }
    await this.takeStatuses(state, parsed.doc.body as StatusReport);
    res.send(200, "OK");
  }

  /**
   * The source lost the post-copy link of `vm` and asks to resume it: this host's half is paused
   * (if it had not noticed yet) and listens again on a free port with a new one-time secret.
   */
  private async onRecover(state: DialogState, vm: string, res: Responder): Promise<void> {
    try {
      if (!state.armed.has(vm)) throw new TeleportError(404, "Not Found", [`${vm} is not part of this dialog`]);
      if (state.offer.policy.convergence !== "postcopy")
        throw new TeleportError(409, "Conflict", [
          `${vm} was offered without convergence=postcopy: nothing to recover`,
        ]);
      const driver = this.opts.host.find(vm)?.driver;
      if (!driver?.recoverIncoming)
        throw new TeleportError(501, "Not Implemented", [`the ${driver?.kind ?? "?"} driver cannot recover post-copy`]);
      const { address, ports } = this.opts.config.migration;
      const port = await freePortInRange(address, ports, new Set());
      if (port === undefined)
        throw new TeleportError(503, "Service Unavailable", [`no free migration port in ${ports}`]);
      const secret = randomBytes(32).toString("base64url");
      const uri = await driver.recoverIncoming(vm, { address, port, secret });
      this.log.warn("post-copy link broke: listening again", { callId: state.callId, vm, uri });
      const body = { kind: "recovery" as const, vm, uri, secret };
      res.send(200, "OK", { body: nrdlBody({ version: state.version, id: state.migrationId, body }) });
    } catch (err) {
      const e = TeleportError.from(err);
      this.log.error("post-copy recovery refused", { vm, status: e.status, reason: e.reason, details: e.details });
      res.send(e.status, e.reason, { headers: { Warning: warningOf(this.opts.config.host, e) } });
    }
  }

  private async takeStatuses(state: DialogState, report: StatusReport): Promise<void> {
    for (const s of report.statuses) {
      if (!state.offer.vms.some((v) => v.name === s.vm)) continue;
      const already = state.statuses.get(s.vm)?.state === "completed"; // reported again: counted once
      state.statuses.set(s.vm, s);
      if (s.state === "completed" && !already) {
        const local = this.opts.host.find(s.vm);
        const here = local ? await local.driver.state(s.vm) : "absent";
        if (here === "running" && local) {
          state.ranHere.add(s.vm);
          this.log.info("VM resumed here", { vm: s.vm, totalMs: s.totalMs, downtimeMs: s.downtimeMs });
          this.opts.metrics?.moved(s);
          // settled now, not at the dialog's end: should it die before, its copied disks are kept, not removed
          await this.settleArrived(local, s.vm, "an arrived VM");
        } else this.log.error("source reports completion but the VM does not run here", { vm: s.vm, state: here });
      }
    }
  }

  private async onBye(state: DialogState, res: Responder): Promise<void> {
    const report = await this.finish(state, "BYE");
    res.send(200, "OK", { body: nrdlBody({ version: state.version, id: state.migrationId, body: report }) });
  }

  /** Source silent or dialog expired: tidy up and tell the source with BYE. */
  private async expire(state: DialogState, why: string): Promise<void> {
    if (state.phase === "ended") return;
    this.log.warn("ending dialog", { callId: state.callId, why });
    const report = await this.finish(state, why);
    await state.dialog
      ?.bye(nrdlBody({ version: state.version, id: state.migrationId, body: report }))
      .catch(() => undefined);
  }

  /** End the dialog once: keep every VM that runs here, disarm everything else, report the truth. */
  private async finish(state: DialogState, why: string): Promise<Report> {
    if (state.phase === "ended") return this.reportOf(state, new Map());
    state.phase = "ended";
    clearTimeout(state.idleTimer);
    clearTimeout(state.expiryTimer);
    // a group not decided yet is decided now (the dialog's end calls it off unless all arrived)
    await state.group?.decide(`the dialog ended: ${why}`);
    const here = new Map<string, boolean>();
    const ended = new Map<string, string>(); // VMs that ran here and no longer run: their state at the end
    // every VM at once: the BYE's answer waits for this, and each state is a monitor round trip
    await Promise.all(
      state.offer.vms.map(async (vm) => {
        const local = this.opts.host.find(vm.name);
        if (!local || !state.armed.has(vm.name)) return;
        const s = await local.driver.state(vm.name).catch(() => "absent" as const);
        if (s === "running") {
          here.set(vm.name, true);
          // arrived: what the listener left (libvirt's armed port, QEMU's migration key) goes now, unless
          // that was done when it was seen running, or the driver would still count the VM armed here
          if (!state.ranHere.has(vm.name)) await this.settleArrived(local, vm.name, "an arrived VM");
          return;
        }
        if (state.ranHere.has(vm.name)) {
          // it ran here, and the source's copy is gone: stopped or paused since, it is still never removed
          ended.set(vm.name, s);
          this.log.error("VM that resumed here no longer runs: kept as it is", { vm: vm.name, state: s });
          return;
        }
        if (s === "postcopy") {
          // a post-copy that did not finish: this half is the VM's running state, never disarm it
          here.set(vm.name, false);
          this.log.error("VM left split in post-copy: keeping this half paused", { vm: vm.name, callId: state.callId });
          return;
        }
        await local.driver
          .disarm(vm.name)
          .catch((err: unknown) => this.log.error("disarm failed", { vm: vm.name, error: String(err) }));
      }),
    );
    state.offer.vms.forEach((v) => this.holders.get(v.name) === state.callId && this.holders.delete(v.name));
    this.dialogs.delete(state.callId);
    this.journal.remove(state.callId);
    this.log.info("dialog finished", {
      callId: state.callId,
      why,
      resumedHere: [...here].filter(([, ran]) => ran).map(([vm]) => vm),
    });
    // the index's memory: every stored page is held whole here
    if (state.dedup)
      this.log.info("dedup index of the dialog", {
        callId: state.callId,
        ...state.dedup.stats,
        indexBytes: state.dedup.stats.stored * 4096,
      });
    state.lastReport = this.reportOf(state, here, ended);
    this.opts.metrics?.armedChanged(-state.armed.size);
    if (state.dialog) this.opts.metrics?.dialogEnded(state.lastReport.outcome, 200);
    return state.lastReport;
  }

  /** A VM that runs here now: its listener's leftovers go, and its copied disks are its own (waitResumed). */
  private async settleArrived(local: LocalVm, vm: string, what: string): Promise<void> {
    await local.driver
      .waitResumed(vm, 0)
      .catch((err: unknown) => this.log.warn(`settling ${what} failed`, { vm, error: String(err) }));
  }

  private reportOf(state: DialogState, here: Map<string, boolean>, ended = new Map<string, string>()): Report {
    if (state.lastReport) return state.lastReport;
    const results: VmResult[] = state.offer.vms.map((vm) => {
      const s = state.statuses.get(vm.name);
      const now = ended.get(vm.name);
      if (now !== undefined)
        return {
          vm: vm.name,
          state: "failed",
          host: humanText(`${this.opts.config.host} (${now})`, 256),
          reason: humanText(`it resumed here, then was ${now} at the dialog's end; the source's copy is gone`),
        };
      if (here.get(vm.name)) {
        return {
          vm: vm.name,
          state: "completed",
          host: this.opts.config.host,
          totalMs: s?.totalMs,
          downtimeMs: s?.downtimeMs,
          transferredBytes: s?.transferredBytes,
          diskTransferredBytes: state.version >= 2 ? s?.diskTransferredBytes : undefined,
        };
      }
      if (here.get(vm.name) === false)
        return {
          vm: vm.name,
          state: "failed",
          host: humanText(`split: ${this.opts.config.host} + ${state.offer.sourceUri}`, 256),
          reason: "post-copy did not finish: its memory is split between both hosts, both halves kept paused",
        };
      const lost = s?.state === "failed" ? "failed" : "aborted";
      return {
        vm: vm.name,
        state: lost,
        host: state.offer.sourceUri,
        reason: humanText(s?.reason ?? "did not resume on this host"),
      };
    });
    const done = results.filter((r) => r.state === "completed").length;
    return {
      kind: "report",
      outcome: done === results.length ? "completed" : done === 0 ? "failed" : "partial",
      results,
    };
  }
}
