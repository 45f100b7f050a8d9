/**
 * The destination's memory across crashes: which dialog armed which VM. Written before the
 * 200 OK goes out and cleared when the dialog ends, so a restarted agent knows which
 * listeners may be orphans. Secrets are never written here.
 *
 * An append-only log (`armed.jsonl`, one `{"add":entry}` or `{"remove":callId}` per line): each
 * dialog costs two small appends, where rewriting the whole journal per change cost milliseconds
 * per dialog once hundreds were open (bench:load). It is compacted (write-then-rename) when it
 * opens and when dead lines outnumber live ones; a crash mid-append leaves at most a torn last
 * line, which replay skips.
 */
import fs from "node:fs";
import { join } from "node:path";

export interface JournalEntry {
  callId: string;
  migrationId: string;
  vms: string[];
  armedAt: string;
  /** Group commit (SPEC.md 5.6): a restart finishes the group from the decision journal. */
  commit?: "group";
  /** Who opened the dialog: the decision written at a restart is theirs to ask for. */
  caller?: string;
}

type Line = { add: JournalEntry } | { remove: string };

const FILE = "armed.jsonl";
/** The whole-map journal of earlier versions, taken over once and removed. */
const LEGACY_FILE = "armed.json";
const MIN_COMPACT_LINES = 256;

function replay(text: string, into: Map<string, JournalEntry>): void {
  for (const raw of text.split("\n")) {
    if (!raw.trim()) continue;
    let line: Line;
    try {
      line = JSON.parse(raw) as Line;
    } catch {
      continue; // a torn last line from a crash mid-append
    }
    if ("add" in line && typeof line.add?.callId === "string") into.set(line.add.callId, line.add);
    else if ("remove" in line) into.delete(line.remove);
  }
}

function readIfExists(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/** What a journal in `stateDir` holds, without opening it for writing (tests, diagnostics). */
export function readJournal(stateDir: string): JournalEntry[] {
  const entries = new Map<string, JournalEntry>();
  const legacy = readIfExists(join(stateDir, LEGACY_FILE));
  if (legacy) {
    try {
      for (const e of Object.values(JSON.parse(legacy) as Record<string, JournalEntry>)) entries.set(e.callId, e);
    } catch {
      // a torn legacy file holds nothing we can trust
    }
  }
  replay(readIfExists(join(stateDir, FILE)) ?? "", entries);
  return [...entries.values()];
}

export class Journal {
  private readonly file: string;
  private readonly entries = new Map<string, JournalEntry>();
  private fd?: number;
  private lines = 0;

  constructor(private readonly stateDir: string) {
    this.file = join(stateDir, FILE);
    for (const e of readJournal(stateDir)) this.entries.set(e.callId, e);
    if (fs.existsSync(this.file) || fs.existsSync(join(stateDir, LEGACY_FILE))) this.compact();
  }

  add(entry: JournalEntry): void {
    this.entries.set(entry.callId, entry);
    this.append({ add: entry });
  }

  remove(callId: string): void {
    if (!this.entries.delete(callId)) return;
    this.append({ remove: callId });
  }

  all(): JournalEntry[] {
    return [...this.entries.values()];
  }

  /** Closes the log (a later add or remove writes it anew). */
  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private append(line: Line): void {
    // the state dir may have been cleaned under a running agent: write it anew rather than lose entries
    const gone = this.fd === undefined || fs.fstatSync(this.fd).nlink === 0;
    if (gone || this.lines >= Math.max(MIN_COMPACT_LINES, 2 * this.entries.size)) return this.compact();
    fs.writeSync(this.fd!, `${JSON.stringify(line)}\n`);
    this.lines++;
  }

  /** The live entries alone, written then renamed over the log: a crash mid-write never loses the journal. */
  private compact(): void {
    this.close();
    fs.mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    const text = [...this.entries.values()].map((e) => `${JSON.stringify({ add: e })}\n`).join("");
    fs.writeFileSync(tmp, text, { mode: 0o600 });
    fs.renameSync(tmp, this.file);
    fs.rmSync(join(this.stateDir, LEGACY_FILE), { force: true });
    this.lines = this.entries.size;
    this.fd = fs.openSync(this.file, "a", 0o600);
  }
}
