/**
 * What the operator sees while a group moves: a bar per VM redrawn in place on a terminal,
 * plain lines when stdout is not a TTY (logs, CI), JSON lines with --json (scripts).
 */
import type { MigrationProgress } from "../../lib/hypervisor/driver";
import type { VmOutcome } from "../../lib/plan/execute";
import type { Answer } from "../../nrdl/types";
import type { MigrateSummary, SourceEvents, SourcePhase } from "./types";
import { tableLines } from "./table";

export type DisplayMode = "tty" | "plain" | "json";

interface Row {
  vm: string;
  phase: string;
  progress: number;
  bytes: number;
  note: string;
  /** Copied disks: their own bar while they mirror. */
  disk?: { progress: number; bytes: number };
}

const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;

function bar(p: number, width = 24): string {
  const full = Math.round(Math.min(1, Math.max(0, p)) * width);
  return "[" + "#".repeat(full) + "-".repeat(width - full) + "]";
}

/** What a plain log says when a VM's post-copy changes course (a break in the link must be seen). */
const POSTCOPY_NEWS: Partial<Record<MigrationProgress["phase"], string>> = {
  postcopy: "post-copy: runs at the destination, its last pages follow",
  "postcopy-paused": "post-copy link broke: both halves paused, recovering over the SIP dialog",
  "postcopy-recover": "post-copy: resuming on a new connection",
};

export class ProgressDisplay implements SourceEvents {
  private readonly rows = new Map<string, Row>();
  private drawn = 0;
  private lastPlain = new Map<string, number>();

  constructor(
    private readonly mode: DisplayMode,
    private readonly write: (s: string) => void = (s) => process.stdout.write(s),
  ) {}

  private emit(event: string, data: Record<string, unknown>): void {
    this.write(JSON.stringify({ event, at: new Date().toISOString(), ...data }) + "\n");
  }

  private line(s: string): void {
    if (this.mode === "tty") this.clear();
    this.write(s + "\n");
    if (this.mode === "tty") this.draw();
  }

  private clear(): void {
    if (this.drawn) this.write(`\x1b[${this.drawn}A\x1b[0J`);
    this.drawn = 0;
  }

  private draw(): void {
    if (this.mode !== "tty") return;
    this.clear();
    const pct = (p: number) => `${(p * 100).toFixed(0).padStart(3)}%`;
    const lines = [...this.rows.values()].flatMap((r) => [
      `  ${r.vm.padEnd(16)} ${bar(r.progress)} ${pct(r.progress)}  ` +
        `${r.phase.padEnd(14)} ${mib(r.bytes).padStart(11)} ${r.note}`,
      ...(r.disk
        ? [
            `  ${"  disks".padEnd(16)} ${bar(r.disk.progress)} ${pct(r.disk.progress)}  ${"".padEnd(14)} ` +
              `${mib(r.disk.bytes).padStart(11)}`,
          ]
        : []),
    ]);
    this.write(lines.map((l) => l + "\n").join(""));
    this.drawn = lines.length;
  }

  onPhase(phase: SourcePhase, detail?: string): void {
    if (this.mode === "json") return this.emit("phase", { phase, detail });
    const text: Record<SourcePhase, string> = {
      inviting: `calling ${detail ?? ""} (INVITE with the NRDL offer)`,
      armed: `destination armed: ${detail ?? ""}`,
      migrating: "migrating",
      closing: "closing the dialog (BYE with the report)",
      done: `done: ${detail ?? ""}`,
    };
    this.line(`* ${text[phase]}`);
  }

  onAnswer(answer: Answer): void {
    // the stream's reductions, as the destination agreed to them per VM (nrdl/SPEC.md 5.7, 5.8)
    const compressed = (a: Answer["armed"][number]) =>
      a.compress ? `${a.compress}${a.channels ? ` over ${a.channels} multifd channels` : ""}` : "";
    const stream = (a: Answer["armed"][number]) =>
      [compressed(a), a.dedup === "on" ? "group dedup" : ""].filter(Boolean).join(", ");
    for (const a of answer.armed)
      this.rows.set(a.vm, { vm: a.vm, phase: "armed", progress: 0, bytes: 0, note: stream(a) });
    if (this.mode === "json")
      return this.emit("answer", {
        armed: answer.armed.map((a) => ({
          vm: a.vm,
          uri: a.uri,
          ...(a.compress ? { compress: a.compress } : {}),
          ...(a.dedup ? { dedup: a.dedup } : {}),
        })),
      });
    const plain = this.mode === "plain" ? answer.armed : [];
    for (const a of plain.filter((x) => x.compress)) this.line(`  ${a.vm}: stream compressed: ${compressed(a)}`);
    for (const a of plain.filter((x) => x.dedup)) this.line(`  ${a.vm}: stream deduplicated across the group`);
    this.draw();
  }

  onStart(vm: string): void {
    this.update(vm, { phase: "migrating" });
    if (this.mode === "json") this.emit("start", { vm });
    else if (this.mode === "plain") this.line(`  ${vm}: migration started`);
  }

  onSwitchover(vms: string[]): void {
    if (this.mode === "json") this.emit("switchover", { vms });
    else this.line(`  switching over together: ${vms.join(", ")}`);
  }

  onProgress(p: MigrationProgress): void {
    const disk = p.disk && { progress: p.disk.progress, bytes: p.disk.transferredBytes };
    const said = POSTCOPY_NEWS[p.phase];
    if (this.mode === "plain" && said && this.rows.get(p.vm)?.phase !== p.phase) this.line(`  ${p.vm}: ${said}`);
    this.update(p.vm, { phase: p.phase, progress: p.progress, bytes: p.transferredBytes, disk });
    if (this.mode === "json") return this.emit("progress", { ...p });
    if (this.mode === "plain") {
      // a line per 25 % keeps logs readable; the disk mirror counts on its own
      const mirroring = p.phase === "disks" && p.disk !== undefined;
      const key = mirroring ? `${p.vm} disks` : p.vm;
      const step = Math.floor((mirroring ? (p.disk?.progress ?? 0) : p.progress) * 4);
      if (step > (this.lastPlain.get(key) ?? -1)) {
        this.lastPlain.set(key, step);
        this.line(
          p.phase === "disks" && p.disk
            ? `  ${p.vm}: disks ${(p.disk.progress * 100).toFixed(0)}% ${mib(p.disk.transferredBytes)} of ` +
                `${mib(p.disk.totalBytes)}`
            : `  ${p.vm}: ${(p.progress * 100).toFixed(0)}% ${mib(p.transferredBytes)} (${p.phase})`,
        );
      }
    }
  }

  onOutcome(o: VmOutcome): void {
    const note = o.state === "completed" ? `downtime ${o.result.downtimeMs} ms` : o.reason;
    this.update(o.vm, {
      phase: o.state,
      progress: o.state === "completed" ? 1 : (this.rows.get(o.vm)?.progress ?? 0),
      note,
    });
    if (this.mode === "json") this.emit("outcome", { ...o });
    else if (this.mode === "plain") this.line(`  ${o.vm}: ${o.state}${note ? ` (${note})` : ""}`);
  }

  private update(vm: string, patch: Partial<Row>): void {
    const row = this.rows.get(vm) ?? { vm, phase: "", progress: 0, bytes: 0, note: "" };
    this.rows.set(vm, { ...row, ...patch });
    this.draw();
  }

  /** The final table: VM, outcome, total time, downtime, bytes, where it runs. */
  summary(s: MigrateSummary): void {
    if (this.mode === "json") return this.emit("summary", { ...s });
    this.clear();
    this.drawn = 0;
    this.write(formatSummary(s));
  }
}

export function formatSummary(s: MigrateSummary): string {
  const head = ["VM", "outcome", "total", "downtime", "transferred", "runs on"];
  const rows = s.vms.map((v) => [
    v.vm,
    v.state,
    v.totalMs !== undefined ? `${v.totalMs} ms` : "-",
    v.downtimeMs !== undefined ? `${v.downtimeMs} ms` : "-",
    v.transferredBytes !== undefined ? mib(v.transferredBytes) : "-",
    v.host,
  ]);
  const t = tableLines(head, rows);
  const lines = [t.head, t.widths.map((w) => "-".repeat(w)).join("  "), ...t.rows];
  for (const v of s.vms) if (v.reason) lines.push(`${v.vm}: ${v.reason}`);
  for (const v of s.vms) {
    if (!v.disks) continue;
    const copied = v.diskTransferredBytes !== undefined ? ` (${mib(v.diskTransferredBytes)} copied)` : "";
    lines.push(`${v.vm} disks: ${v.disks}${copied}`);
  }
  if (s.dedup)
    lines.push(
      `group dedup: ${s.dedup.hits} of ${s.dedup.pages} pages sent as references, ${mib(s.dedup.linkBytes)} on the ` +
        `link for ${mib(s.dedup.bytesIn)} of streams` +
        (s.dedup.linkBytes !== s.dedup.bytesOut ? ` (${mib(s.dedup.bytesOut)} of frames, deflated)` : "") +
        ` (index ${s.dedup.stored} of ${s.dedup.capPages} pages, relay CPU ${Math.round(s.dedup.cpuMs)} ms)`,
    );
  if (s.groupDowntimeMs !== undefined)
    lines.push(
      `group downtime ${s.groupDowntimeMs} ms (first VM stopped to the last one's state loaded at the destination)`,
    );
  const p = s.phases;
  lines.push(
    `${s.migrationId}: ${s.outcome}. SIP phases: INVITE->200 ${p.arming} ms` +
      (p.ackToFirstMigrate !== undefined ? `, 200->first migrate ${p.ackToFirstMigrate} ms` : "") +
      (p.lastCompletionToByeOk !== undefined ? `, last completion->BYE 200 ${p.lastCompletionToByeOk} ms` : ""),
  );
  return "\n" + lines.join("\n") + "\n";
}
