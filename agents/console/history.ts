/**
 * Past dialogs of the console, one JSON file each under `<stateDir>/console/`, so the page
 * shows them again after a restart. Written once, when a dialog ends; never rewritten.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { TeleportError } from "../../lib/errors";
import type { LadderStep } from "../../lib/sip/ladder";
import type { MigrateSummary } from "../source/agent";

export interface TimelineSample {
  at: number;
  bytes: number;
  phase: string;
}

/** One VM's migration over time: pre-copy from start to `endedAt - downtimeMs`, then downtime. */
export interface VmTimeline {
  vm: string;
  startedAt: number;
  endedAt?: number;
  state?: string;
  totalMs?: number;
  downtimeMs?: number;
  samples: TimelineSample[];
}

export interface HistoryRecord {
  id: string;
  migrationId?: string;
  to: string;
  by: string;
  startedAt: number;
  endedAt: number;
  outcome: MigrateSummary["outcome"] | "refused" | "cancelled";
  summary?: MigrateSummary;
  error?: { status: number; reason: string; details: string[] };
  ladder: LadderStep[];
  timelines: VmTimeline[];
}

export type HistoryEntry = Pick<
  HistoryRecord,
  "id" | "migrationId" | "to" | "by" | "startedAt" | "endedAt" | "outcome"
>;

const ID = /^\d{13}-[0-9a-f]{8}$/;

export class HistoryStore {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, "console");
  }

  async add(record: Omit<HistoryRecord, "id">): Promise<HistoryRecord> {
    const full: HistoryRecord = { id: `${record.startedAt}-${randomBytes(4).toString("hex")}`, ...record };
    await mkdir(this.dir, { recursive: true });
    // write then rename: a crash never leaves half a record for the next start to choke on
    const tmp = join(this.dir, `.${full.id}.tmp`);
    await writeFile(tmp, JSON.stringify(full));
    await rename(tmp, join(this.dir, `${full.id}.json`));
    return full;
  }

  /** Newest first. */
  async list(): Promise<HistoryEntry[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return [];
    }
    const ids = names
      .filter((n) => n.endsWith(".json"))
      .map((n) => n.slice(0, -5))
      .filter((id) => ID.test(id))
      .sort()
      .reverse();
    const entries: HistoryEntry[] = [];
    for (const id of ids) {
      const r = await this.get(id).catch(() => undefined);
      if (r)
        entries.push({
          id: r.id,
          migrationId: r.migrationId,
          to: r.to,
          by: r.by,
          startedAt: r.startedAt,
          endedAt: r.endedAt,
          outcome: r.outcome,
        });
    }
    return entries;
  }

  async get(id: string): Promise<HistoryRecord> {
    if (!ID.test(id)) throw new TeleportError(404, "no such dialog in the history", [id]);
    try {
      return JSON.parse(await readFile(join(this.dir, `${id}.json`), "utf8")) as HistoryRecord;
    } catch {
      throw new TeleportError(404, "no such dialog in the history", [id]);
    }
  }
}
