/**
 * nrdl/SPEC.md 5.6's crash-point table, the QEMU and link rows: an agent is held at a crash point
 * (lib/plan/crash-point.ts) while the test kills one QEMU with -9 or cuts the inter-DC link, then
 * let go. Every case ends with each VM on exactly one host (the killed one, where its only copy
 * was killed, nowhere), no copy paused anywhere, and nothing left armed or journaled.
 */
import { execFileSync } from "node:child_process";
import {
  decisionsOf,
  killQemuOf,
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

async function start(point: Parameters<typeof reached>[1], on: "source" | "destination") {
  const world = await newWorld();
  await listen(world, on === "destination" ? { holdAt: point } : {});
  const source = migrate(world, on === "source" ? { holdAt: point } : {});
  await reached(world, point);
  return { world, source };
}

describe("a source QEMU killed", () => {
  it.each(["source:claimed", "source:stopped"] as const)(
    "at %s: the group is called off, the other VM runs on at the source",
    async (point) => {
      const { world, source } = await start(point, "source");
      killQemuOf(world, "dc1", "video");
      release(world, point);
      expect(await source.exited).toBe(1);
      await settledOn(world, "dc1", ["router1"]);
      expect(await states(world, ["video"])).toEqual({ video: "dc1:absent dc2:absent" });
      expect(decisionsOf(world).map((d) => d.outcome)).toEqual(["abort"]);
      expect(nothingPending(world)).toEqual({ armed: [], stoppedGroups: [] });
    },
  );

  it("once its rest was sent: its state arrived whole, the group commits and runs at the destination", async () => {
    const { world, source } = await start("source:sent", "source");
    killQemuOf(world, "dc1", "video"); // the stopped source copy: what it held is at the destination
    release(world, "source:sent");
    await source.exited;
    await settledOn(world, "dc2");
    expect(decisionsOf(world).map((d) => d.outcome)).toEqual(["commit"]);
    expect(nothingPending(world)).toEqual({ armed: [], stoppedGroups: [] });
  });
});

describe("a destination QEMU killed", () => {
  it.each(["source:claimed", "source:stopped"] as const)(
    "at %s: its VM cannot arrive, the group is aborted and runs on at the source",
    async (point) => {
      const { world, source } = await start(point, "source");
      killQemuOf(world, "dc2", "video");
      release(world, point);
      expect(await source.exited).toBe(1);
      await settledOn(world, "dc1");
      expect(decisionsOf(world).map((d) => d.outcome)).toEqual(["abort"]);
      expect(nothingPending(world)).toEqual({ armed: [], stoppedGroups: [] });
    },
  );

  it("after it arrived, before the decision: abort, and the source resumes every VM, that one included", async () => {
    const { world, source } = await start("destination:arrived", "destination");
    killQemuOf(world, "dc2", "video");
    release(world, "destination:arrived");
    expect(await source.exited).toBe(1);
    await settledOn(world, "dc1");
    expect(decisionsOf(world).map((d) => d.outcome)).toEqual(["abort"]);
    expect(nothingPending(world)).toEqual({ armed: [], stoppedGroups: [] });
  });

  it("after commit, before it ran: it is returned and runs at the source, the rest at the destination", async () => {
    const { world, source } = await start("destination:committed", "destination");
    killQemuOf(world, "dc2", "video");
    release(world, "destination:committed");
    await source.exited;
    await settledOn(world, "dc2", ["router1"]);
    await settledOn(world, "dc1", ["video"]);
    expect(decisionsOf(world).map((d) => d.outcome)).toEqual(["commit"]);
    expect(nothingPending(world)).toEqual({ armed: [], stoppedGroups: [] });
  });
});

const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

asRoot("the link cut", () => {
  it.each(["source:claimed", "source:stopped"] as const)(
    "at %s: the rest waits in TCP; when the link returns the group is decided once and lands on one host",
    async (point) => {
      const { world, source } = await start(point, "source");
      // dc1 and dc2 share loopback: their link is dc2's SIP port and migration ports
      const table = `st_cut_${process.pid}`;
      const [lo, hi] = world.pair.dc2.cfg.migration.ports.split("-");
      const sipPort = world.pair.dc2.uri.replace(/.*:(\d+);.*/, "$1");
      const nft = (...args: string[]) => execFileSync("nft", args, { stdio: "pipe" });
      nft("add", "table", "inet", table);
      nft("add", "chain", "inet", table, "out", "{ type filter hook output priority 0 ; }");
      for (const dir of ["dport", "sport"]) {
        nft("add", "rule", "inet", table, "out", "tcp", dir, `${lo}-${hi}`, "drop");
        nft("add", "rule", "inet", table, "out", "udp", dir, sipPort, "drop");
      }
      try {
        release(world, point);
        await new Promise((r) => setTimeout(r, 3000));
      } finally {
        nft("delete", "table", "inet", table);
      }
      await source.exited;
      const outcome = decisionsOf(world).map((d) => d.outcome);
      expect(outcome).toHaveLength(1);
      await settledOn(world, outcome[0] === "commit" ? "dc2" : "dc1");
      expect(nothingPending(world)).toEqual({ armed: [], stoppedGroups: [] });
    },
  );
});
