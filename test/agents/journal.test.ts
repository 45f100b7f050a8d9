/** The destination's journal survives restarts, torn appends, a removed state dir and the old file format. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Journal, readJournal, type JournalEntry } from "../../agents/destination/journal";

const entry = (n: number): JournalEntry => ({
  callId: `call-${n}`,
  migrationId: `m-${n}`,
  vms: [`vm${n}`],
  armedAt: "2026-11-28T00:00:00.000Z",
});

describe("destination journal", () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "sip-teleport-journal-"))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("a new agent sees what the last one armed and did not clear", () => {
    const j = new Journal(dir);
    [1, 2, 3].forEach((n) => j.add(entry(n)));
    j.remove("call-2");
    j.remove("call-unknown");
    j.close();
    expect(new Journal(dir).all()).toEqual([entry(1), entry(3)]);
    expect(readJournal(dir).map((e) => e.callId)).toEqual(["call-1", "call-3"]);
  });

  it("skips a torn last line (a crash mid-append) and keeps the rest", () => {
    const j = new Journal(dir);
    j.add(entry(1));
    j.close();
    fs.appendFileSync(path.join(dir, "armed.jsonl"), '{"add":{"callId":"call-2","migr');
    expect(new Journal(dir).all()).toEqual([entry(1)]);
  });

  it("compacts: thousands of dialogs leave a log of the live entries' size", () => {
    const j = new Journal(dir);
    for (let n = 0; n < 5000; n++) {
      j.add(entry(n));
      if (n >= 10) j.remove(`call-${n - 10}`);
    }
    const lines = fs.readFileSync(path.join(dir, "armed.jsonl"), "utf8").trim().split("\n").length;
    expect(lines).toBeLessThanOrEqual(256 + 1);
    expect(j.all()).toHaveLength(10);
    j.close();
    expect(new Journal(dir).all().map((e) => e.callId)).toEqual(j.all().map((e) => e.callId));
  });

  it("recreates a state dir cleaned under the running agent rather than lose an entry", () => {
    const j = new Journal(dir);
    j.add(entry(1));
    fs.rmSync(dir, { recursive: true, force: true });
    j.add(entry(2));
    j.close();
    expect(readJournal(dir).map((e) => e.callId)).toEqual(["call-1", "call-2"]);
  });

  it("takes over the whole-map armed.json of earlier versions and removes it", () => {
    fs.writeFileSync(path.join(dir, "armed.json"), JSON.stringify({ "call-7": entry(7) }));
    const j = new Journal(dir);
    expect(j.all()).toEqual([entry(7)]);
    expect(fs.existsSync(path.join(dir, "armed.json"))).toBe(false);
    j.close();
    expect(readJournal(dir)).toEqual([entry(7)]);
  });
});
