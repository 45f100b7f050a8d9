/**
 * The destination's group decisions (SPEC.md 5.6), written before they are acted on: a `commit`
 * on disk means every VM of the group arrived and all of them are to run here, whatever crashes
 * next; `abort` means none of them does. Kept 24 h after the dialog, so a source that lost its
 * dialog (or its process) can still ask what became of its group.
 *
 * An append-only log (`decisions.jsonl`), one record per line, fsync'd before `write` returns.
 * Records past the retention are dropped when the log is opened (write-then-rename).
 */
import fs from "node:fs";
import { join } from "node:path";

export interface DecisionRecord {
  migrationId: string;
  callId: string;
  /** Who opened the dialog (lib/access/identity.ts `callerOf`): only they may ask. */
  caller: string;
  outcome: "commit" | "abort";
  reason?: string;
  vms: string[];
  /** commit: VMs whose arrived copy died before it ran (their source copy resumes). */
  returned?: string[];
  at: string;
}

const FILE = "decisions.jsonl";
const RETENTION_MS = 24 * 3600 * 1000;

function isRecord(v: unknown): v is DecisionRecord {
  const r = v as Partial<DecisionRecord> | null;
  return (
    typeof r?.migrationId === "string" &&
    typeof r.callId === "string" &&
    (r.outcome === "commit" || r.outcome === "abort") &&
    Array.isArray(r.vms)
  );
}

export class DecisionLog {
  private readonly file: string;
  /** migration id -> its decision (the first one written: a decision is never changed). */
  private readonly records = new Map<string, DecisionRecord>();

  constructor(
    private readonly stateDir: string,
    private readonly retentionMs = RETENTION_MS,
  ) {
    this.file = join(stateDir, FILE);
    let text = "";
    try {
      text = fs.readFileSync(this.file, "utf8");
    } catch {
      return;
    }
    const oldest = Date.now() - this.retentionMs;
    for (const raw of text.split("\n")) {
      let rec: unknown;
      try {
        rec = JSON.parse(raw);
      } catch {
        continue; // empty, or a torn last line from a crash mid-append
      }
      if (isRecord(rec) && Date.parse(rec.at) >= oldest && !this.records.has(rec.migrationId))
        this.records.set(rec.migrationId, rec);
    }
    const tmp = `${this.file}.tmp`;
    fs.writeFileSync(tmp, [...this.records.values()].map((r) => `${JSON.stringify(r)}\n`).join(""), { mode: 0o600 });
    fs.renameSync(tmp, this.file);
  }

  get(migrationId: string): DecisionRecord | undefined {
    return this.records.get(migrationId);
  }

  /** Record a decision durably; an earlier decision for the same migration stands and is returned. */
  write(rec: Omit<DecisionRecord, "at">): DecisionRecord {
    const earlier = this.records.get(rec.migrationId);
    if (earlier) return earlier;
    const full: DecisionRecord = { ...rec, at: new Date().toISOString() };
    fs.mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    const fd = fs.openSync(this.file, "a", 0o600);
    try {
      fs.writeSync(fd, `${JSON.stringify(full)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    this.records.set(rec.migrationId, full);
    return full;
  }
}
