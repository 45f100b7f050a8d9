/**
 * nrdl/SPEC.md 5.6's crash-point table, the agent rows: kill -9 of the source agent and of the
 * destination agent at each crash point of a group switchover under group commit (real agents as
 * processes, real QEMU). Every case ends with the whole group running on one host, no copy paused
 * anywhere, once the killed agent has been started again.
 */
import type { CrashPoint } from "../../lib/plan/crash-point";
import {
  decisionsOf,
  kill9,
  listen,
  migrate,
  nothingPending,
  reached,
  release,
  settledOn,
  states,
  worldPerTest,
} from "./world";

jest.setTimeout(120_000);
const newWorld = worldPerTest();

describe("the source agent killed", () => {
  it.each<[CrashPoint, "dc1" | "dc2", string]>([
    ["source:claimed", "dc1", "abort"],
    ["source:stopped", "dc1", "abort"],
    ["source:sent", "dc2", "commit"],
    ["source:decided", "dc2", "commit"],
  ])("at %s: once it starts again, the whole group runs on %s (%s)", async (point, host, outcome) => {
    const w = await newWorld();
    await listen(w);
    const source = migrate(w, { crashAt: point });
    await source.exited; // killed itself at the point
    if (host === "dc2") {
      // the destination commits on its own when everything arrived; the source's copies wait stopped
      await until(async () => Object.values(await states(w)).every((s) => s.endsWith("dc2:running")));
      expect(Object.values(await states(w)).filter((s) => s.startsWith("dc1:running"))).toEqual([]);
    }
    // started again: it asks the destination what it decided, and acts on that alone
    await w.pair.dc1.agent.recover();
    await settledOn(w, host);
    // before the stop (claimed) nothing was journaled: the destination decides alone, at its deadline
    await until(() => decisionsOf(w).length > 0);
    expect(decisionsOf(w).map((d) => d.outcome)).toEqual([outcome]);
    await until(() => nothingPending(w).armed.length === 0);
    expect(nothingPending(w)).toEqual({ armed: [], stoppedGroups: [] });
  });
});

describe("the destination agent killed", () => {
  it.each<[CrashPoint, "dc1" | "dc2", string]>([
    ["destination:arrived", "dc1", "abort"],
    ["destination:committed", "dc2", "commit"],
    ["destination:resuming", "dc2", "commit"],
  ])("at %s: once it starts again, the whole group runs on %s (%s)", async (point, host, outcome) => {
    const w = await newWorld();
    const dest = await listen(w, { crashAt: point });
    const source = migrate(w);
    await dest.exited; // killed itself at the point; the source waits for a decision, asking
    await listen(w); // started again: it finishes the group from its journal, then answers the source
    expect(await source.exited).toBe(host === "dc2" ? 0 : 1);
    await settledOn(w, host);
    expect(decisionsOf(w).map((d) => d.outcome)).toEqual([outcome]);
    expect(nothingPending(w).stoppedGroups).toEqual([]);
  });

  it.each(["source:claimed", "source:stopped"] as const)(
    "at %s: the group is sent, arrives paused, waits undecided, and the restarted agent aborts it",
    async (point) => {
      const w = await newWorld();
      const dest = await listen(w);
      const source = migrate(w, { holdAt: point });
      await reached(w, point);
      await kill9(dest);
      release(w, point);
      // the incoming QEMUs outlive their agent and receive the group, paused; nobody may run them yet
      await new Promise((r) => setTimeout(r, 2000));
      await listen(w);
      expect(await source.exited).toBe(1);
      await settledOn(w, "dc1");
      expect(decisionsOf(w).map((d) => d.outcome)).toEqual(["abort"]);
      expect(nothingPending(w)).toEqual({ armed: [], stoppedGroups: [] });
    },
  );
});

describe("the source agent killed mid-stream of a deduplicated group (its relays die with it)", () => {
  it("the source QEMUs' migrations fail, the group runs on at dc1, dc2 disarms", async () => {
    const w = await newWorld();
    await listen(w);
    // 16 Mbit/s: the streams run for many seconds, so the kill lands in them
    const source = migrate(w, {}, ["--dedup", "on", "--bandwidth-mbps", "16"]);
    await source.waitFor(/"phase":"active"/);
    await kill9(source);
    await w.pair.dc1.agent.recover(); // started again: nothing of the move is left to settle but QEMU's
    await settledOn(w, "dc1");
    await until(() => nothingPending(w).armed.length === 0);
    expect(nothingPending(w)).toEqual({ armed: [], stoppedGroups: [] });
  });
});

async function until(check: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check()) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
}
