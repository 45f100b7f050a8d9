/**
 * The source agent (UAC): offers a group of local VMs to a destination, and once every
 * listener is armed (200 OK) migrates them by the plan, reporting progress in-dialog (INFO)
 * and closing with BYE. Used by the CLI (`sip-teleport migrate`) and the console alike.
 */
import { randomBytes } from "node:crypto";
import { TeleportError } from "../../lib/errors";
import type { MigrationProgress } from "../../lib/hypervisor/driver";
import type { Host } from "../../lib/hypervisor/host";
import type { Logger } from "../../lib/log/logger";
import { executePlan, type VmOutcome } from "../../lib/plan/execute";
import { planOffer } from "../../lib/plan/waves";
import type { Dialog, SipBackend, SipBody } from "../../lib/sip/backend";
import { buildNrdl, formatViolation, humanText, parseNrdl } from "../../nrdl";
import type { Answer, NrdlDocument, Offer, Outcome, Policy, Report, VmSpec, VmStatus } from "../../nrdl/types";
import { NRDL_MIME } from "../../nrdl/types";
import { StatusReporter } from "./status-reporter";

export interface MigrateRequest {
  /** Destination SIP URI, e.g. sip:dc2@10.10.10.67 */
  to: string;
  /** Either VM names from the local inventory (with `policy`), or a complete offer (plan file). */
  vms?: string[];
  policy?: Policy;
  plan?: Offer;
  /** Ctrl-C / console Abort: CANCEL before the answer, abort migrations after it. */
  signal?: AbortSignal;
}

export type SourcePhase = "inviting" | "armed" | "migrating" | "closing" | "done";

export interface SourceEvents {
  onPhase?(phase: SourcePhase, detail?: string): void;
  onAnswer?(answer: Answer): void;
  onStart?(vm: string): void;
  onProgress?(p: MigrationProgress): void;
  onOutcome?(o: VmOutcome): void;
  onSwitchover?(vms: string[]): void;
}

export interface VmSummary {
  vm: string;
  state: VmStatus["state"];
  /** Where the VM runs now. */
  host: string;
  totalMs?: number;
  downtimeMs?: number;
  transferredBytes?: number;
  reason?: string;
}

export interface MigrateSummary {
  migrationId: string;
  outcome: Outcome;
  vms: VmSummary[];
  /** The destination's own report (body of its 200 to our BYE), when it answered. */
  destinationReport?: Report;
  /** SIP phases in ms: INVITE->200 (arming), 200->first migrate, last completion->BYE's 200. */
  phases: { arming: number; ackToFirstMigrate?: number; lastCompletionToByeOk?: number };
}

export interface SourceOptions {
  sip: SipBackend;
  host: Host;
  /** This host's name or URI, written into reports for VMs that stayed here. */
  hostName: string;
  logger: Logger;
}

const nrdlBody = (doc: NrdlDocument): SipBody => ({ contentType: NRDL_MIME, content: buildNrdl(doc) });

export class SourceAgent {
  private readonly log: Logger;

  constructor(private readonly opts: SourceOptions) {
    this.log = opts.logger.child({ agent: "source" });
  }

  /** The offer for `req`, checked against the local inventory: every VM defined and running here. */
  async buildOffer(req: MigrateRequest): Promise<Offer> {
    let offer: Offer;
    if (req.plan) {
      offer = { ...req.plan, destinationUri: req.to };
    } else {
      if (!req.vms?.length || !req.policy) throw new TeleportError(400, "nothing to migrate", ["name at least one VM, or give a plan file"]);
      const vms: VmSpec[] = req.vms.map((name) => {
        const local = this.opts.host.find(name);
        if (!local) throw new TeleportError(404, "unknown VM", [`${name} is not in this host's inventory`]);
        const { def } = local;
        return { name, hypervisor: def.hypervisor, role: def.role, memoryMib: def.memoryMib, cpus: def.cpus, dependsOn: [] };
      });
      offer = { kind: "offer", sourceUri: this.opts.sip.aor, destinationUri: req.to, policy: req.policy, vms };
    }
    const problems: string[] = [];
    for (const vm of offer.vms) {
      const local = this.opts.host.find(vm.name);
      if (!local) {
        problems.push(`${vm.name} is not in this host's inventory`);
        continue;
      }
      const state = await local.driver.state(vm.name);
      if (state !== "running") problems.push(`${vm.name} is ${state} here, not running`);
    }
    if (problems.length) throw new TeleportError(409, "cannot migrate", problems);
    planOffer(offer); // refuses cycles before anything goes on the wire
    return offer;
  }

  async migrate(req: MigrateRequest, events: SourceEvents = {}): Promise<MigrateSummary> {
    const offer = await this.buildOffer(req);
    const migrationId = `mig-${randomBytes(4).toString("hex")}`;
    const log = this.log.child({ migrationId });
    events.onPhase?.("inviting", req.to);
    const t0 = Date.now();
    const invite = this.opts.sip.invite(req.to, nrdlBody({ version: 1, id: migrationId, body: offer }));
    const onAbort = () => invite.cancel();
    req.signal?.addEventListener("abort", onAbort, { once: true });
    let dialog: Dialog;
    let answer: Answer;
    try {
      const est = await invite.established;
      dialog = est.dialog;
      answer = this.answerOf(est.response.body, offer);
    } catch (err) {
      const e = TeleportError.from(err);
      log.warn("INVITE failed", { status: e.status, reason: e.reason, details: e.details });
      throw e;
    } finally {
      req.signal?.removeEventListener("abort", onAbort);
    }
    const arming = Date.now() - t0;
    events.onAnswer?.(answer);
    events.onPhase?.("armed", `${answer.armed.length} listeners armed in ${arming} ms`);
    log.info("destination armed", { vms: answer.armed.map((a) => a.vm), ms: arming });

    if (req.signal?.aborted) return this.close(dialog, offer, migrationId, [], { arming }, events, "aborted by operator before migration");

    const reporter = new StatusReporter(dialog, migrationId, log);
    const targets = new Map(answer.armed.map((a) => [a.vm, a]));
    let firstStart: number | undefined;
    let lastCompletion: number | undefined;
    events.onPhase?.("migrating");
    const outcomes = await executePlan({
      plan: planOffer(offer),
      policy: offer.policy,
      signal: req.signal,
      start: (vm, pause) => {
        firstStart ??= Date.now();
        const local = this.opts.host.find(vm);
        const target = targets.get(vm);
        if (!local || !target) throw new TeleportError(500, `no listener for ${vm}`);
        return local.driver.migrate(vm, { uri: target.uri, secret: target.secret }, {
          bandwidthMbps: offer.policy.bandwidthMbps,
          downtimeLimitMs: offer.policy.downtimeLimitMs,
          timeoutS: offer.policy.timeoutS,
          pauseBeforeSwitchover: pause,
          onProgress: (p) => {
            reporter.progress(p);
            events.onProgress?.(p);
          },
        });
      },
      events: {
        onStart: (vm) => {
          reporter.state({ vm, state: "migrating", progress: 0 });
          events.onStart?.(vm);
        },
        onOutcome: (o) => {
          if (o.state === "completed") lastCompletion = Date.now();
          reporter.state(statusOf(o));
          events.onOutcome?.(o);
        },
        onSwitchover: (_wave, vms) => events.onSwitchover?.(vms),
      },
    });
    await reporter.close();
    const phases = { arming, ackToFirstMigrate: firstStart !== undefined ? firstStart - (t0 + arming) : undefined };
    return this.close(dialog, offer, migrationId, outcomes, phases, events, undefined, lastCompletion);
  }

  /** Check the 200's answer covers every VM of the offer with a listener. */
  private answerOf(body: SipBody | undefined, offer: Offer): Answer {
    if (!body) throw new TeleportError(502, "Bad Gateway", ["the destination's 200 OK carried no NRDL answer"]);
    const parsed = parseNrdl(body.content);
    if (!parsed.ok) throw new TeleportError(502, "Bad Gateway", parsed.violations.map((v) => `destination answer ${formatViolation(v)}`));
    if (parsed.doc.body.kind !== "answer") throw new TeleportError(502, "Bad Gateway", [`expected an <answer>, got <${parsed.doc.body.kind}>`]);
    const answer = parsed.doc.body;
    const missing = offer.vms.filter((v) => !answer.armed.some((a) => a.vm === v.name)).map((v) => v.name);
    if (missing.length) throw new TeleportError(502, "Bad Gateway", [`no listener armed for ${missing.join(", ")}`]);
    return answer;
  }

  private async close(
    dialog: Dialog,
    offer: Offer,
    migrationId: string,
    outcomes: VmOutcome[],
    phases: MigrateSummary["phases"],
    events: SourceEvents,
    allAborted?: string,
    lastCompletion?: number,
  ): Promise<MigrateSummary> {
    events.onPhase?.("closing");
    const here = this.opts.hostName;
    const vms: VmSummary[] = offer.vms.map((vm) => {
      const o = outcomes.find((x) => x.vm === vm.name);
      if (!o) return { vm: vm.name, state: "aborted", host: here, reason: allAborted ?? "not started" };
      if (o.state === "completed") {
        return { vm: vm.name, state: "completed", host: offer.destinationUri, totalMs: o.result.totalMs, downtimeMs: o.result.downtimeMs, transferredBytes: o.result.transferredBytes };
      }
      return { vm: vm.name, state: o.state, host: here, reason: o.reason };
    });
    const outcome = outcomeOf(vms);
    const report: Report = { kind: "report", outcome, results: vms.map((v) => ({ ...v, host: humanText(v.host, 256), reason: v.reason && humanText(v.reason) })) };
    let destinationReport: Report | undefined;
    try {
      const res = await dialog.bye(nrdlBody({ version: 1, id: migrationId, body: report }));
      if (lastCompletion !== undefined) phases.lastCompletionToByeOk = Date.now() - lastCompletion;
      const parsed = res.body ? parseNrdl(res.body.content) : undefined;
      if (parsed?.ok && parsed.doc.body.kind === "report") destinationReport = parsed.doc.body;
    } catch (err) {
      this.log.warn("BYE got no answer; the destination's report is unknown", { error: TeleportError.from(err).message });
    }
    if (destinationReport) {
      for (const v of vms) {
        const d = destinationReport.results.find((r) => r.vm === v.vm);
        // Both sides must agree that the VM runs at the destination; say so when they do not.
        if (v.state === "completed" && d && d.state !== "completed") v.reason = `destination reports ${d.state}: ${d.reason ?? ""}`.trim();
      }
    }
    events.onPhase?.("done", outcome);
    return { migrationId, outcome, vms, destinationReport, phases };
  }
}

function statusOf(o: VmOutcome): VmStatus {
  if (o.state === "completed") {
    return { vm: o.vm, state: "completed", progress: 1, totalMs: o.result.totalMs, downtimeMs: o.result.downtimeMs, transferredBytes: o.result.transferredBytes };
  }
  return { vm: o.vm, state: o.state, reason: humanText(o.reason) };
}

function outcomeOf(vms: VmSummary[]): Outcome {
  const done = vms.filter((v) => v.state === "completed").length;
  return done === vms.length ? "completed" : done === 0 ? "failed" : "partial";
}
