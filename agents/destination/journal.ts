/**
 * The destination's memory across crashes: which dialog armed which VM. Written before the
 * 200 OK goes out and cleared when the dialog ends, so a restarted agent knows which
 * listeners may be orphans. Secrets are never written here.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface JournalEntry {
  callId: string;
  migrationId: string;
  vms: string[];
  armedAt: string;
}

export class Journal {
  private readonly file: string;
  private entries: Record<string, JournalEntry>;

  constructor(private readonly stateDir: string) {
    this.file = join(stateDir, "armed.json");
    this.entries = this.read();
  }

  private read(): Record<string, JournalEntry> {
    try {
      return JSON.parse(readFileSync(this.file, "utf8")) as Record<string, JournalEntry>;
    } catch {
      return {};
    }
  }

  private write(): void {
    // write-then-rename: a crash mid-write never leaves a half journal behind
    // the state dir may have been cleaned under a running agent: recreate it rather than lose the entry
    mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.entries, null, 2), { mode: 0o600 });
    renameSync(tmp, this.file);
  }

  add(entry: JournalEntry): void {
    this.entries[entry.callId] = entry;
    this.write();
  }

  remove(callId: string): void {
    if (!(callId in this.entries)) return;
    delete this.entries[callId];
    this.write();
  }

  all(): JournalEntry[] {
    return Object.values(this.entries);
  }
}
