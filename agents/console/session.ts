/**
 * The console's one call at a time, like a softphone's line: Call (INVITE), Migrate (run the
 * plan), Bye, with Cancel before the answer and Abort while migrations run. Everything the page
 * shows comes from here as a snapshot, pushed to listeners on every change; the SIP MESSAGE
 * trigger uses the same line, so a triggered migration shows on the page too.
 */
import { TeleportError } from "../../lib/errors";
import type { DiskProgress, MigrationProgress } from "../../lib/hypervisor/driver";
import type { VmOutcome } from "../../lib/plan/execute";
import { describeMessage, type LadderStep, type TraceEvent } from "../../lib/sip/ladder";
import type { Answer } from "../../nrdl/types";
import type { MigrateRequest, MigrateSummary, SourceAgent, SourceEvents, SourcePhase } from "../source/agent";
import type { SourceCall } from "../source/call";
import { renderDryRun, type DryRun } from "../source/dry-run";
import type { HistoryRecord, HistoryStore, VmTimeline } from "./history";

export type LinePhase = "idle" | "calling" | "armed" | "migrating" | "finished" | "closing" | "ended";

export interface VmRow {
  vm: string;
  phase: string;
  progress: number;
  transferredBytes: number;
  totalBytes: number;
  note?: string;
  /** Copied disks of the VM together, while and after they are mirrored. */
  disk?: DiskProgress;
}

export interface ErrorInfo {
  status: number;
  reason: string;
  details: string[];
}

export interface LineSnapshot {
  phase: LinePhase;
  to?: string;
  migrationId?: string;
  callId?: string;
  /** Who started this call: "console" or the MESSAGE sender's URI. */
  by?: string;
  answer?: { armed: string[]; rejected: Answer["rejected"] };
  rows: VmRow[];
  timelines: VmTimeline[];
  ladder: LadderStep[];
  error?: ErrorInfo;
  summary?: MigrateSummary;
  historyId?: string;
}

export type LineEvent = { type: "state"; state: LineSnapshot } | { type: "history"; record: HistoryRecord };

/** What the buttons may do in each phase: the page enables them from the same table. */
export const ALLOWED: Record<"call" | "cancel" | "migrate" | "abort" | "bye", readonly LinePhase[]> = {
  call: ["idle", "ended"],
  cancel: ["calling"],
  migrate: ["armed"],
  abort: ["migrating"],
  bye: ["armed", "finished"],
};

/** Samples kept per VM for its timeline chart: enough for a smooth line, small enough for the page. */
const MAX_SAMPLES = 240;

export class ConsoleLine {
  private state: LineSnapshot = { phase: "idle", rows: [], timelines: [], ladder: [] };
  private call?: SourceCall;
  private calling?: AbortController;
  private migrating?: AbortController;
  private startedAt = 0;
  private readonly listeners = new Set<(e: LineEvent) => void>();
  private readonly timelines = new Map<string, VmTimeline>();
  /** Call-ID of the dialog on the line, learnt from our INVITE before the answer. */
  private ladderCallId?: string;
  /** Whether the current call's INVITE left (only then is there a dialog to keep in the history). */
  private invited = false;

  constructor(
    private readonly agent: SourceAgent,
    private readonly history: HistoryStore,
  ) {}

  snapshot(): LineSnapshot {
    // A VM's timeline is drawn once it reached its outcome; samples in flight stay here.
    const timelines = [...this.timelines.values()].filter((t) => t.endedAt !== undefined);
    return { ...this.state, rows: this.state.rows.map((r) => ({ ...r })), timelines, ladder: [...this.state.ladder] };
  }

  subscribe(listener: (e: LineEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(e: LineEvent): void {
    for (const l of this.listeners) l(e);
  }

  private update(patch: Partial<LineSnapshot>): void {
    this.state = { ...this.state, ...patch };
    this.emit({ type: "state", state: this.snapshot() });
  }

  private require(action: keyof typeof ALLOWED): void {
    if (!ALLOWED[action].includes(this.state.phase)) {
      throw new TeleportError(409, `cannot ${action} now`, [
        `the line is ${this.state.phase}; ${action} is possible when ${ALLOWED[action].join(" or ")}`,
      ]);
    }
  }

  /** Every SIP message of the backend; the ones of our dialog go onto the ladder. */
  trace(e: TraceEvent): void {
    if (this.state.phase === "idle" || this.state.phase === "ended") return;
    const step: LadderStep = { ...describeMessage(e.message), rightward: e.direction === "sent", at: e.at };
    if (!this.ladderCallId && step.rightward && step.label.startsWith("INVITE")) this.ladderCallId = step.callId;
    if (!step.callId || step.callId !== this.ladderCallId) return;
    this.update({ ladder: [...this.state.ladder, step] });
  }

  /** INVITE with the offer; resolves when the destination answered (armed), rejects with its refusal. */
  /** Ask the destination first (OPTIONS): what it would arm or refuse; the line and its phase stay as they are. */
  async dryRun(req: MigrateRequest): Promise<{ dryRun: DryRun; text: string }> {
    const d = await this.agent.dryRun(req);
    return { dryRun: d, text: renderDryRun(d) };
  }

  async dial(req: MigrateRequest, by = "console"): Promise<LineSnapshot> {
    this.require("call");
    this.calling = new AbortController();
    this.ladderCallId = undefined;
    this.invited = false;
    this.timelines.clear();
    this.startedAt = Date.now();
    this.state = { phase: "calling", to: req.to, by, rows: [], timelines: [], ladder: [] };
    this.emit({ type: "state", state: this.snapshot() });
    try {
      this.call = await this.agent.call({ ...req, signal: this.calling.signal }, this.sourceEvents());
      this.ladderCallId = this.call.callId;
      this.update({ phase: "armed", migrationId: this.call.migrationId, callId: this.call.callId });
      return this.snapshot();
    } catch (err) {
      const e = TeleportError.from(err);
      // Refused before any INVITE left (a VM not running here, a typo): no dialog to keep.
      if (this.invited) await this.end({ error: errorInfo(e) });
      else this.update({ phase: "ended", error: errorInfo(e) });
      throw e;
    } finally {
      this.calling = undefined;
    }
  }

  cancel(): void {
    this.require("cancel");
    this.calling?.abort();
  }

  /** Run the plan; resolves when every VM reached its outcome. */
  migrate(): Promise<VmOutcome[]> {
    this.require("migrate");
    const call = this.call as SourceCall;
    this.migrating = new AbortController();
    this.update({ phase: "migrating" });
    return call.run(this.migrating.signal).finally(() => {
      this.migrating = undefined;
      if (this.state.phase === "migrating") this.update({ phase: "finished" });
    });
  }

  abort(): void {
    this.require("abort");
    this.migrating?.abort();
  }

  /** BYE with the report; resolves with the summary once the destination answered. */
  async bye(): Promise<MigrateSummary> {
    this.require("bye");
    const call = this.call as SourceCall;
    this.update({ phase: "closing" });
    try {
      const summary = await call.bye();
      await this.end({ summary });
      return summary;
    } catch (err) {
      const e = TeleportError.from(err);
      await this.end({ error: errorInfo(e) });
      throw e;
    }
  }

  /** The dialog is over (hung up or refused): keep its record on disk and show it. */
  private async end(result: { summary?: MigrateSummary; error?: ErrorInfo }): Promise<void> {
    this.call = undefined;
    const record = await this.history.add({
      migrationId: this.state.migrationId,
      to: this.state.to ?? "",
      by: this.state.by ?? "console",
      startedAt: this.startedAt,
      endedAt: Date.now(),
      outcome: result.summary?.outcome ?? (result.error?.status === 487 ? "cancelled" : "refused"),
      summary: result.summary,
      error: result.error,
      ladder: this.state.ladder,
      timelines: [...this.timelines.values()],
    });
    this.update({ phase: "ended", ...result, historyId: record.id });
    this.emit({ type: "history", record });
  }

  private row(vm: string, patch: Partial<VmRow>): void {
    const rows = [...this.state.rows];
    const i = rows.findIndex((r) => r.vm === vm);
    const base: VmRow = i >= 0 ? rows[i] : { vm, phase: "armed", progress: 0, transferredBytes: 0, totalBytes: 0 };
    if (i >= 0) rows[i] = { ...base, ...patch };
    else rows.push({ ...base, ...patch });
    this.update({ rows });
  }

  private timeline(vm: string): VmTimeline {
    let t = this.timelines.get(vm);
    if (!t) this.timelines.set(vm, (t = { vm, startedAt: Date.now(), samples: [] }));
    return t;
  }

  private sourceEvents(): SourceEvents {
    return {
      onPhase: (phase: SourcePhase) => {
        if (phase === "inviting") this.invited = true;
      },
      onAnswer: (a: Answer) => {
        this.update({
          answer: { armed: a.armed.map((x) => x.vm), rejected: a.rejected },
          rows: a.armed.map((x) => ({ vm: x.vm, phase: "armed", progress: 0, transferredBytes: 0, totalBytes: 0 })),
        });
      },
      onStart: (vm: string) => {
        this.timeline(vm);
        this.row(vm, { phase: "migrating" });
      },
      onProgress: (p: MigrationProgress) => {
        const t = this.timeline(p.vm);
        t.samples.push({ at: Date.now(), bytes: p.transferredBytes, phase: p.phase });
        if (t.samples.length > MAX_SAMPLES)
          t.samples = t.samples.filter((_, i) => i % 2 === 0 || i === t.samples.length - 1);
        this.row(p.vm, {
          phase: p.phase,
          progress: p.progress,
          transferredBytes: p.transferredBytes,
          totalBytes: p.totalBytes,
          ...(p.disk ? { disk: p.disk } : {}),
        });
      },
      onOutcome: (o: VmOutcome) => {
        const t = this.timeline(o.vm);
        t.endedAt = Date.now();
        t.state = o.state;
        if (o.state === "completed") {
          t.downtimeMs = o.result.downtimeMs;
          t.totalMs = o.result.totalMs;
          this.row(o.vm, {
            phase: "completed",
            progress: 1,
            transferredBytes: o.result.transferredBytes,
            note: `downtime ${o.result.downtimeMs} ms`,
          });
        } else {
          this.row(o.vm, { phase: o.state, note: o.reason });
        }
      },
    };
  }
}

function errorInfo(e: TeleportError): ErrorInfo {
  return { status: e.status, reason: e.reason, details: [...e.details] };
}
