/**
 * One answered call of the source agent: the dialog is open and every listener armed. The
 * plan runs when the operator says so (`run`, once), and `bye` hangs up with the report. The
 * CLI does the three at once (`SourceAgent.migrate`); the console has a button for each.
 */
import type { AnswerHosts } from "../../lib/access/answer-hosts";
import { TeleportError } from "../../lib/errors";
import type { MigrationTarget } from "../../lib/hypervisor/driver";
import type { Logger } from "../../lib/log/logger";
import { streamReductionOf } from "../../lib/plan/compress";
import { DEDUP_INDEX_PAGES } from "../../lib/plan/dedup";
import { SentPages } from "../../lib/dedup/encoder";
import { executePlan, type VmOutcome } from "../../lib/plan/execute";
import { planOffer } from "../../lib/plan/waves";
import type { Dialog, SipBody } from "../../lib/sip/backend";
import { buildNrdl, humanText, parseNrdl } from "../../nrdl";
import type { Answer, NrdlDocument, Offer, Outcome, Report, VmStatus } from "../../nrdl/types";
import { NRDL_MIME } from "../../nrdl/types";
import type { MigrateSummary, SourceEvents, SourceOptions, VmSummary } from "./types";
import { StatusReporter } from "./status-reporter";
import { GroupJournal } from "./group-journal";
import { SourceGroup } from "./source-group";

export const nrdlBody = (doc: NrdlDocument): SipBody => ({ contentType: NRDL_MIME, content: buildNrdl(doc) });

export interface AnsweredCall {
  migrationId: string;
  /** The offer's NRDL version, carried by every document of the dialog. */
  version: number;
  offer: Offer;
  answer: Answer;
  dialog: Dialog;
  /** Where this destination may put listeners: a recovery's new one is vetted like the answer's. */
  hosts: AnswerHosts;
  events: SourceEvents;
  /** When the 200 OK arrived (ms since the epoch), and how long arming took. */
  answeredAt: number;
  arming: number;
}

export class SourceCall {
  readonly migrationId: string;
  readonly offer: Offer;
  readonly answer: Answer;
  private readonly dialog: Dialog;
  private readonly events: SourceEvents;
  private readonly log: Logger;
  private running: Promise<VmOutcome[]> | undefined;
  private outcomes: VmOutcome[] = [];
  private firstStart: number | undefined;
  private lastCompletion: number | undefined;
  private closing = false;
  /** Why the dialog ended without our BYE, when the destination or the network ended it. */
  private endedRemotely: string | undefined;
  /**
   * Group page dedup (nrdl/SPEC.md 5.8): the dialog's pages sent, shared by the VMs whose <armed>
   * says dedup="on"; never more than the destination's cap (its answer's dedup-pages) nor this host's.
   */
  private readonly pages: SentPages | undefined;

  constructor(
    private readonly opts: SourceOptions,
    private readonly call: AnsweredCall,
  ) {
    ({
      migrationId: this.migrationId,
      offer: this.offer,
      answer: this.answer,
      dialog: this.dialog,
      events: this.events,
    } = call);
    this.log = opts.logger;
    const cap = Math.min(this.answer.dedupPages ?? 0, opts.dedupIndexPages ?? DEDUP_INDEX_PAGES);
    if (this.answer.armed.some((a) => a.dedup === "on") && cap > 0)
      this.pages = new SentPages(cap, this.answer.dedupLink === "deflate");
    this.dialog.onTerminated((reason) => {
      if (this.closing) return;
      this.endedRemotely = reason;
      this.log.warn("the dialog ended before our BYE", { reason });
    });
  }

  get callId(): string {
    return this.dialog.callId;
  }

  /** Migrate by the plan; resolves with every VM's outcome. `signal` aborts running migrations. */
  run(signal?: AbortSignal): Promise<VmOutcome[]> {
    if (this.running)
      throw new TeleportError(409, "the plan already ran in this dialog", [
        "hang up (BYE) and call again to migrate more",
      ]);
    if (this.closing || this.endedRemotely)
      throw new TeleportError(481, "the dialog is over", [this.endedRemotely ?? "BYE sent"]);
    this.running = this.execute(signal);
    return this.running;
  }

  private async execute(signal?: AbortSignal): Promise<VmOutcome[]> {
    const { offer, events } = this;
    const reporter = new StatusReporter(this.dialog, this.migrationId, this.call.version, this.log);
    const targets = new Map(this.answer.armed.map((a) => [a.vm, a]));
    const group = this.groupOf(reporter);
    events.onPhase?.("migrating");
    this.outcomes = await executePlan({
      plan: planOffer(offer),
      policy: offer.policy,
      signal,
      groupCommit: group,
      start: (vm, pause) => {
        this.firstStart ??= Date.now();
        const local = this.opts.host.find(vm);
        const target = targets.get(vm);
        if (!local || !target) throw new TeleportError(500, `no listener for ${vm}`);
        return local.driver.migrate(
          vm,
          { uri: target.uri, secret: target.secret, exports: target.exports },
          {
            bandwidthMbps: offer.policy.bandwidthMbps,
            downtimeLimitMs: offer.policy.downtimeLimitMs,
            timeoutS: offer.policy.timeoutS,
            pauseBeforeSwitchover: pause,
            awaitCommit: !!group,
            // a destination that did not answer `commit` predates group commit (nrdl/SPEC.md 5.6)
            stopByQemu: this.answer.commit === undefined,
            convergence: offer.policy.convergence ?? "none",
            // checked against the offer and this driver when the answer came (nrdl/SPEC.md 5.7)
            compress: streamReductionOf(target),
            // checked against the offer, the answer's commit and this driver when the answer came (5.8)
            dedup: target.dedup === "on" ? this.pages : undefined,
            recover: (v) => this.recoveryListener(v, reporter),
            recoverWithinS: this.opts.postcopyRecoveryS,
            onProgress: (p) => {
              reporter.progress(p);
              events.onProgress?.(p);
            },
          },
        );
      },
      events: {
        onStart: (vm) => {
          reporter.state({ vm, state: "migrating", progress: 0 });
          events.onStart?.(vm);
        },
        onOutcome: (o) => {
          if (o.state === "completed") this.lastCompletion = Date.now();
          reporter.state(statusOf(o, this.call.version));
          events.onOutcome?.(o);
        },
        onSwitchover: (vms) => {
          // the group's own INFOs (<switchover>, <abort>) then never wait behind a status
          if (group) reporter.holdStatuses();
          events.onSwitchover?.(vms);
        },
      },
    });
    await reporter.close();
    return this.outcomes;
  }

  /** Group commit, when the destination agreed to it (nrdl/SPEC.md 5.6): the source's half of it. */
  private groupOf(reporter: StatusReporter): SourceGroup | undefined {
    const stateDir = this.opts.stateDir;
    if (this.answer.commit !== "group" || !stateDir) return undefined;
    const group = new SourceGroup({
      migrationId: this.migrationId,
      version: this.call.version,
      to: this.offer.destinationUri,
      vms: this.offer.vms.map((v) => v.name),
      host: this.opts.host,
      sip: this.opts.sip,
      reporter,
      journal: new GroupJournal(stateDir),
      log: this.log,
      decisionTimeoutMs: Math.max(60, this.offer.policy.timeoutS) * 1000,
    });
    this.dialog.onInfo((req, res) => group.onInfo(req, res));
    return group;
  }

  /**
   * Post-copy recovery over this dialog: an INFO asking the destination to listen again for `vm`,
   * answered 200 with where and a new one-time secret (NRDL/SPEC.md, 5.5).
   */
  private async recoveryListener(vm: string, reporter: StatusReporter): Promise<MigrationTarget> {
    if (this.call.version < 2)
      throw new TeleportError(501, `this dialog speaks NRDL ${this.call.version}: post-copy recovery needs 2`);
    const doc = { version: this.call.version, id: this.migrationId, body: { kind: "recover" as const, vm } };
    this.log.warn("asking the destination to listen again for a broken post-copy", { vm });
    const res = await reporter.request(buildNrdl(doc));
    const parsed = res.body ? parseNrdl(res.body.content) : undefined;
    const body = parsed?.ok ? parsed.doc.body : undefined;
    if (body?.kind !== "recovery" || body.vm !== vm)
      throw new TeleportError(502, `the destination answered the recovery of ${vm} without a <recovery> for it`);
    return { uri: await this.call.hosts.pin(body.uri, `${vm}'s recovery listener`), secret: body.secret };
  }

  /** Hang up: BYE with our report, and the destination's report from its 200. Waits for a running plan first. */
  async bye(): Promise<MigrateSummary> {
    if (this.closing) throw new TeleportError(409, "already hung up");
    this.closing = true;
    if (this.running) await this.running;
    const { offer, events, migrationId } = this;
    events.onPhase?.("closing");
    const here = this.opts.hostName;
    const notRun = this.running ? "not started" : "hung up before migration";
    const split = await this.splitVms();
    const vms: VmSummary[] = offer.vms.map((vm) => {
      const o = this.outcomes.find((x) => x.vm === vm.name);
      // a post-copy that could not recover: both halves paused, neither host runs it alone
      if (o?.state === "failed" && split.has(vm.name))
        return { vm: vm.name, state: "failed", host: `split: ${here} + ${offer.destinationUri}`, reason: o.reason };
      if (!o) return { vm: vm.name, state: "aborted", host: here, reason: notRun };
      if (o.state === "completed") {
        return {
          vm: vm.name,
          state: "completed",
          host: offer.destinationUri,
          totalMs: o.result.totalMs,
          downtimeMs: o.result.downtimeMs,
          transferredBytes: o.result.transferredBytes,
          ...this.diskSummary(vm.name, o.result.diskTransferredBytes, offer.destinationUri),
        };
      }
      return { vm: vm.name, state: o.state, host: here, reason: o.reason, ...this.diskSummary(vm.name) };
    });
    const outcome = outcomeOf(vms);
    const group = offer.policy.strategy === "switchover" ? groupDowntimeMs(this.outcomes) : undefined;
    const report: Report = {
      kind: "report",
      outcome,
      groupDowntimeMs: this.call.version >= 2 ? group : undefined,
      results: vms.map((v) => ({
        vm: v.vm,
        state: v.state,
        host: humanText(v.host, 256),
        totalMs: v.totalMs,
        downtimeMs: v.downtimeMs,
        transferredBytes: v.transferredBytes,
        reason: v.reason && humanText(v.reason),
        diskTransferredBytes: this.call.version >= 2 ? v.diskTransferredBytes : undefined,
      })),
    };
    const phases: MigrateSummary["phases"] = {
      arming: this.call.arming,
      ackToFirstMigrate: this.firstStart !== undefined ? this.firstStart - this.call.answeredAt : undefined,
    };
    const destinationReport = this.endedRemotely ? undefined : await this.sendBye(report);
    if (destinationReport && this.lastCompletion !== undefined)
      phases.lastCompletionToByeOk = Date.now() - this.lastCompletion;
    if (destinationReport) {
      for (const v of vms) {
        const d = destinationReport.results.find((r) => r.vm === v.vm);
        // Both sides must agree that the VM runs at the destination; say so when they do not.
        if (v.state === "completed" && d && d.state !== "completed")
          v.reason = `destination reports ${d.state}: ${d.reason ?? ""}`.trim();
      }
    }
    events.onPhase?.("done", outcome);
    const summary: MigrateSummary = { migrationId, outcome, vms, destinationReport, phases };
    if (group !== undefined) summary.groupDowntimeMs = group;
    if (this.pages) {
      summary.dedup = { ...this.pages.stats };
      // the source's half holds a 32-byte digest per stored page
      this.log.info("dedup index of the dialog", { ...summary.dedup, indexBytes: summary.dedup.stored * 32 });
    }
    return summary;
  }

  /** VMs that failed in post-copy and are still split between this host and the destination. */
  private async splitVms(): Promise<Set<string>> {
    const split = new Set<string>();
    for (const o of this.outcomes) {
      if (o.state !== "failed") continue;
      const state = await this.opts.host
        .find(o.vm)
        ?.driver.state(o.vm)
        .catch(() => undefined);
      if (state === "postcopy") split.add(o.vm);
    }
    return split;
  }

  /** Where a VM's copied disks are now: the destination's new image after a move, else still here. */
  private diskSummary(vm: string, bytes?: number, moved?: string): Pick<VmSummary, "disks" | "diskTransferredBytes"> {
    const copied = this.offer.vms.find((v) => v.name === vm)?.disks.filter((d) => d.mode !== "shared") ?? [];
    if (!copied.length) return {};
    const files = (this.opts.host.find(vm)?.def.disks ?? []).filter((d) => copied.some((c) => c.target === d.target));
    const here = files.map((d) => `${d.target} ${d.file}`).join(", ");
    return moved
      ? {
          disks:
            `copied to ${moved} (the image paths of its inventory); the old image stays here until ` +
            `you remove it: ${here}`,
          diskTransferredBytes: bytes,
        }
      : { disks: `here, untouched: ${here}` };
  }

  private async sendBye(report: Report): Promise<Report | undefined> {
    let body: SipBody | undefined;
    try {
      body = nrdlBody({ version: this.call.version, id: this.migrationId, body: report });
    } catch (err) {
      // a report NRDL cannot carry must not keep the dialog open: hang up without it
      this.log.error("cannot build the BYE's report; hanging up without it", { error: String(err) });
    }
    try {
      const res = await this.dialog.bye(body);
      const parsed = res.body ? parseNrdl(res.body.content) : undefined;
      return parsed?.ok && parsed.doc.body.kind === "report" ? parsed.doc.body : undefined;
    } catch (err) {
      this.log.warn("BYE got no answer; the destination's report is unknown", {
        error: TeleportError.from(err).message,
      });
      return undefined;
    }
  }
}

function statusOf(o: VmOutcome, version: number): VmStatus {
  if (o.state === "completed") {
    const disk = version >= 2 && o.result.diskTransferredBytes !== undefined;
    return {
      vm: o.vm,
      state: "completed",
      progress: 1,
      totalMs: o.result.totalMs,
      downtimeMs: o.result.downtimeMs,
      transferredBytes: o.result.transferredBytes,
      ...(disk ? { diskProgress: 1, diskTransferredBytes: o.result.diskTransferredBytes } : {}),
    };
  }
  return { vm: o.vm, state: o.state, reason: humanText(o.reason) };
}

/** First STOP to the last end of downtime among the VMs that moved; undefined when QEMU did not say. */
export function groupDowntimeMs(outcomes: readonly VmOutcome[]): number | undefined {
  const spans = outcomes.flatMap((o) =>
    o.state === "completed" && o.result.stoppedAt !== undefined && o.result.downtimeMs >= 0
      ? [[o.result.stoppedAt, o.result.stoppedAt + o.result.downtimeMs] as const]
      : [],
  );
  if (spans.length === 0) return undefined;
  return Math.round(Math.max(...spans.map((s) => s[1])) - Math.min(...spans.map((s) => s[0])));
}

function outcomeOf(vms: VmSummary[]): Outcome {
  const done = vms.filter((v) => v.state === "completed").length;
  return done === vms.length ? "completed" : done === 0 ? "failed" : "partial";
}
