/**
 * Group commit over real SIP and real QEMU (nrdl/SPEC.md 5.6), agents in process: the offer asks
 * for it, the answer grants it, the group stops at once and is sent whole, every VM arrives
 * paused, the destination writes `commit` and only then runs them, and tells the source, which
 * quits its stopped copies. Then what a decision query may and may not learn.
 */
import fs from "node:fs";
import path from "node:path";
import { buildNrdl, parseNrdl } from "../../nrdl";
import { NRDL_MIME, type Policy } from "../../nrdl/types";
import { extraSource, move, pairPerTest, bootOnSource, expectAllOn } from "../harness";
import { groupDefs, GROUP } from "./world";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { SourceAgent } from "../../agents/source/agent";
import { silentLogger } from "../../lib/log/logger";

jest.setTimeout(120_000);

const SWITCHOVER: Policy = {
  strategy: "switchover",
  maxParallel: 2,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 60,
  onError: "abort",
};

let defs: VmDefinition[];
beforeAll(async () => {
  defs = await groupDefs();
});
const start = pairPerTest();

/** NRDL bodies of SIP messages dc2 sent or received, by the body's element. */
function bodies(trace: Array<{ direction: string; message: string }>, direction: string, element: string): string[] {
  return trace
    .filter((e) => e.direction === direction && e.message.includes(`<${element}`))
    .map((e) => e.message.slice(e.message.indexOf("<?xml")));
}

const query = (id: string) =>
  ({ contentType: NRDL_MIME, content: buildNrdl({ version: 2, id, body: { kind: "decision-query" } }) }) as const;

describe("a switchover group under group commit", () => {
  it("arrives paused, is committed once by the destination, then runs there whole", async () => {
    const pair = await start(defs);
    await bootOnSource(pair);
    const summary = await move(pair, { policy: SWITCHOVER });
    expect(summary.vms.map((v) => [v.vm, v.state])).toEqual(GROUP.map((vm) => [vm, "completed"]));
    await expectAllOn(pair, "dc2");
    const t = pair.dc2.trace;
    // the offer asked, the answer granted, the source said it stopped, the destination decided
    expect(bodies(t, "received", "offer")[0]).toContain('commit="group"');
    expect(bodies(t, "sent", "answer")[0]).toContain('<answer commit="group">');
    expect(bodies(t, "received", "switchover")).toHaveLength(1);
    expect(bodies(t, "sent", "decision")).toEqual([expect.stringContaining('<decision outcome="commit"/>')]);
    const log = fs.readFileSync(path.join(pair.dc2.cfg.stateDir, "decisions.jsonl"), "utf8").trim().split("\n");
    expect(log.map((l) => (JSON.parse(l) as { outcome: string }).outcome)).toEqual(["commit"]);
    // the source's journal of stopped groups is empty again
    expect(JSON.parse(fs.readFileSync(path.join(pair.dc1.cfg.stateDir, "source-groups.json"), "utf8"))).toEqual([]);
    // asked afterwards, the destination still knows (a source that lost its dialog learns it so)
    const res = await pair.dc1.sip.query(pair.dc2.uri, query(summary.migrationId));
    const answered = res.body ? parseNrdl(res.body.content) : undefined;
    expect(answered?.ok && answered.doc.body).toEqual({ kind: "decision", outcome: "commit" });
  });

  it("without group commit (a source with no state dir): no commit asked or answered, QEMU stops each VM", async () => {
    const pair = await start(defs);
    await bootOnSource(pair);
    const agent = new SourceAgent({ sip: pair.dc1.sip, host: pair.dc1.host, hostName: "dc1", logger: silentLogger });
    const summary = await move(pair, { policy: SWITCHOVER, agent });
    expect(summary.vms.map((v) => [v.vm, v.state])).toEqual(GROUP.map((vm) => [vm, "completed"]));
    await expectAllOn(pair, "dc2");
    expect(bodies(pair.dc2.trace, "received", "offer")[0]).not.toContain("commit=");
    expect(bodies(pair.dc2.trace, "sent", "answer")[0]).not.toContain("commit=");
    expect(bodies(pair.dc2.trace, "received", "switchover")).toEqual([]);
    expect(fs.existsSync(path.join(pair.dc2.cfg.stateDir, "decisions.jsonl"))).toBe(false);
  });

  it("answers a query for a migration it never saw with unknown, and another caller's with 403", async () => {
    const pair = await start(defs, {
      dc2: { security: { users: { dc1: "pw-dc1", other: "pw-other" }, allow: ["sip:dc1@*", "sip:other@*"] } },
    });
    await bootOnSource(pair);
    const dc1 = await extraSource(pair, { credentials: { username: "dc1", password: "pw-dc1" } });
    const other = await extraSource(pair, { credentials: { username: "other", password: "pw-other" } });
    try {
      const summary = await move(pair, { policy: SWITCHOVER, agent: dc1.agent });
      expect(summary.outcome).toBe("completed");
      const unknown = await dc1.sip.query(pair.dc2.uri, query("mig-00000000"));
      const body = unknown.body ? parseNrdl(unknown.body.content) : undefined;
      expect(body?.ok && body.doc.body).toEqual({ kind: "decision", outcome: "unknown" });
      const res = await other.sip.query(pair.dc2.uri, query(summary.migrationId));
      expect([res.status, res.header("Warning")]).toEqual([403, expect.stringContaining("was not opened by")]);
    } finally {
      await dc1.stop();
      await other.stop();
    }
  });
});
