/**
 * The core's merged-request check (RFC 3261 §8.2.2.2) through the indexed server map: the same INVITE
 * arriving by a second path (another Via branch) while the first transaction lives is answered 482;
 * other requests are not taken for it.
 */
import { IndexedServers } from "../../lib/sip/sipjs/server-index";
import { rawInvite } from "../security/raw-sip";
import { OFFER, withRawUas } from "./helpers";

const server = (fromTag: string, callId: string, cseq: number) => ({
  transaction: { request: { fromTag, callId, cseq } },
});

describe("IndexedServers", () => {
  it("narrows values() to the focused request's key, and only while focused", () => {
    const m = new IndexedServers<ReturnType<typeof server>>();
    const a = server("t1", "c1", 1);
    const b = server("t1", "c1", 2);
    const c = server("t2", "c1", 1);
    m.set("A", a).set("B", b).set("C", c);
    expect(m.focus({ fromTag: "t1", callId: "c1", cseq: 1 }, () => [...m.values()])).toEqual([a]);
    expect(m.focus({ fromTag: "t9", callId: "c1", cseq: 1 }, () => [...m.values()])).toEqual([]);
    expect([...m.values()]).toEqual([a, b, c]);
    m.delete("A");
    m.set("C", a); // an id re-used for another request moves in the index
    expect(m.focus({ fromTag: "t2", callId: "c1", cseq: 1 }, () => [...m.values()])).toEqual([]);
    expect(m.focus({ fromTag: "t1", callId: "c1", cseq: 1 }, () => [...m.values()])).toEqual([a]);
    m.clear();
    expect(m.focus({ fromTag: "t1", callId: "c1", cseq: 1 }, () => [...m.values()])).toEqual([]);
    expect(m.size).toBe(0);
  });
});

test("an INVITE merged from a second path gets 482; another call is answered", async () => {
  await withRawUas(async ({ raw, target, seen }) => {
    const first = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, OFFER);
    raw.send(first.text);
    expect((await raw.final(first.callId))?.status).toBe(200);
    // same From tag, Call-ID and CSeq, another branch: the request forked and came back another way
    const branch = /branch=([^;\r\n]+)/.exec(first.text)?.[1] ?? "";
    raw.send(first.text.replace(branch, `${branch}other`));
    for (let i = 0; i < 60 && !raw.all(first.callId).some((r) => r.status === 482); i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(raw.all(first.callId).map((r) => r.status)).toContain(482);
    const other = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, OFFER);
    raw.send(other.text);
    expect((await raw.final(other.callId))?.status).toBe(200);
    expect(seen.invites).toBe(2);
  });
});
