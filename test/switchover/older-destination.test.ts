/**
 * A destination from before group commit refuses an offer that names `commit` (its parser rejects
 * the unknown attribute with 400, or NRDL 2 altogether): the source calls again with the same
 * offer without it (nrdl/SPEC.md 5.6), and never resends for any other 400. The destination here
 * is the real SIP stack with a handler that answers as such a peer did.
 */
import type { SipJsBackend } from "../../lib/sip";
import { TeleportError } from "../../lib/errors";
import { parseNrdl } from "../../nrdl";
import type { Policy } from "../../nrdl/types";
import { bootOnSource, guestDefs, pairPerTest, refusal } from "../harness";
import { startAgent } from "../sip/helpers";

jest.setTimeout(60_000);

const policy = {
  strategy: "switchover" as const,
  maxParallel: 1,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 30,
  onError: "abort" as const,
};

/**
 * A UAS that refuses every INVITE: with `firstDetails` (400) when the offer names the attribute it
 * predates (commit, compress or dedup), the rest with 488.
 */
function olderDestination(
  uas: SipJsBackend,
  firstDetails: string[],
  predates: "commit" | "compress" | "dedup" = "commit",
): string[] {
  const offers: string[] = [];
  uas.setHandlers({
    onInvite: (req, res) => {
      offers.push(req.body?.content ?? "");
      const parsed = parseNrdl(req.body?.content ?? "");
      const named = parsed.ok && parsed.doc.body.kind === "offer" && parsed.doc.body.policy[predates] !== undefined;
      if (named) return res.reject(new TeleportError(400, "Invalid NRDL", firstDetails));
      res.reject(new TeleportError(488, "Not Acceptable Here", ["router1: test destination refuses everything"]));
    },
  });
  return offers;
}

/** Two offers: the first in NRDL 2 with `attribute`, the second without it, in NRDL 1. */
function expectAskedAgainWithout(offers: string[], attribute: string): void {
  expect(offers).toHaveLength(2);
  expect(offers[0]).toContain(attribute);
  expect(offers[0]).toContain('version="2"');
  expect(offers[1]).not.toContain(attribute.split("=")[0] + "=");
  expect(offers[1]).toContain('version="1"');
}

describe("calling a destination that predates group commit", () => {
  const start = pairPerTest();
  let uas: SipJsBackend | undefined;
  afterEach(async () => {
    await uas?.stop();
    uas = undefined;
  });

  /** Call an older destination refusing with `details` when the offer names `predates`; every offer it got. */
  async function callOlder(
    details: string[],
    predates: "commit" | "compress" | "dedup" = "commit",
    p: Policy = policy,
  ) {
    const pair = await start(await guestDefs([["router1", "router"]]));
    await bootOnSource(pair);
    uas = await startAgent("dc2", ["udp"]);
    const offers = olderDestination(uas, details, predates);
    const to = `sip:dc2@127.0.0.1:${uas.listeners[0].port}`;
    return { e: await refusal(pair.dc1.agent.call({ to, vms: ["router1"], policy: p })), offers };
  }

  it.each([
    ["an earlier NRDL 2", "/nrdl/offer/policy/@commit: unexpected attribute; <policy> takes strategy, convergence"],
    ["NRDL 1 only", "/nrdl/@version: unsupported version 2; this build speaks NRDL versions 1"],
  ])("%s: the offer goes again without commit, as NRDL 1 when it needs nothing newer", async (_what, detail) => {
    const { e, offers } = await callOlder([detail]);
    expect([e.status, e.details.join(" ")]).toEqual([488, expect.stringContaining("refuses everything")]);
    expectAskedAgainWithout(offers, 'commit="group"');
  });

  it("any other 400 is not a reason to call again", async () => {
    const { e, offers } = await callOlder(["/nrdl/offer/vm[1]/@memory-mib: expected a positive integer"]);
    expect(e.status).toBe(400);
    expect(offers).toHaveLength(1);
  });

  describe("or stream compression (nrdl/SPEC.md 5.7, 8)", () => {
    it.each([
      ["an earlier NRDL 2", "/nrdl/offer/policy/@compress: unexpected attribute; <policy> takes strategy, commit"],
      ["NRDL 1 only", "/nrdl/@version: unsupported version 2; this build speaks NRDL versions 1"],
    ])("%s: a capped offer goes again without compress, as NRDL 1", async (_what, detail) => {
      const capped = { ...policy, strategy: "sequential" as const, bandwidthMbps: 100 };
      const { e, offers } = await callOlder([detail], "compress", capped);
      expect(e.status).toBe(488);
      expectAskedAgainWithout(offers, 'compress="zstd zlib xbzrle"');
    });

    it("a switchover that only compress was refused for keeps asking for group commit", async () => {
      const refused = ["/nrdl/offer/policy/@compress: unexpected attribute"];
      const { e, offers } = await callOlder(refused, "compress", { ...policy, bandwidthMbps: 100 });
      expect(e.status).toBe(488);
      expect(offers).toHaveLength(2);
      expect(offers[0]).toMatch(/commit="group" compress="zstd zlib xbzrle"/);
      expect(offers[1]).toContain('commit="group"');
      expect(offers[1]).not.toContain("compress=");
    });
  });

  it("or group page dedup (SPEC.md 5.8): a capped group goes again without it, commit and compress kept", async () => {
    const refused = ["/nrdl/offer/policy/@dedup: unexpected attribute; <policy> takes strategy, commit, compress"];
    const { e, offers } = await callOlder(refused, "dedup", { ...policy, bandwidthMbps: 100 });
    expect(e.status).toBe(488);
    expect(offers).toHaveLength(2);
    expect(offers[0]).toMatch(/commit="group" compress="zstd zlib xbzrle" dedup="on"/);
    expect(offers[1]).toMatch(/commit="group" compress="zstd zlib xbzrle"\/>/);
  });
});
