/**
 * The source's memory of groups it stopped under group commit (nrdl/SPEC.md 5.6), written before
 * the first VM's rest is sent and removed once every VM of the group is settled. A source agent
 * killed in between finds its stopped VMs here when it starts again, and asks the destination
 * what it decided before it touches them: it never resumes them on its own, nor quits them.
 */
import fs from "node:fs";
import { join } from "node:path";

export interface StoppedGroup {
  migrationId: string;
  /** The destination's URI, where a decision query goes. */
  to: string;
  vms: string[];
  stoppedAt: string;
}

const FILE = "source-groups.json";

export class GroupJournal {
  private readonly file: string;

  constructor(private readonly stateDir: string) {
    this.file = join(stateDir, FILE);
  }

  all(): StoppedGroup[] {
    let text: string;
    try {
      text = fs.readFileSync(this.file, "utf8");
    } catch {
      return [];
    }
    try {
      const list = JSON.parse(text) as unknown;
      return Array.isArray(list) ? (list as StoppedGroup[]).filter((g) => typeof g?.migrationId === "string") : [];
    } catch {
      return []; // never torn: written whole, then renamed
    }
  }

  add(group: StoppedGroup): void {
    this.save([...this.all().filter((g) => g.migrationId !== group.migrationId), group]);
  }

  remove(migrationId: string): void {
    const rest = this.all().filter((g) => g.migrationId !== migrationId);
    this.save(rest);
  }

  private save(groups: StoppedGroup[]): void {
    fs.mkdirSync(this.stateDir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.tmp`;
    const fd = fs.openSync(tmp, "w", 0o600);
    try {
      fs.writeSync(fd, JSON.stringify(groups));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
  }
}
