/**
 * NRDL 2 group page dedup (nrdl/SPEC.md 5.8): `<policy dedup>` in the offer, `<armed dedup>` and
 * `<answer dedup-pages>` in the answer, `<accepted dedup>` in a preview; and the negotiation on
 * both ends (lib/plan/dedup.ts): v1 offers and v2 offers without the attribute keep the plain
 * stream, dedup goes only with group commit, and a driver without it never gets it.
 */
import { acceptReductions, answeredDedup, answeredDedupLink, offerDedup, withoutDedup } from "../../lib/plan/dedup";
import { QEMU_COMPRESSION } from "../../lib/hypervisor/qemu-compress";
import { buildNrdl, minimumVersion, offerDocument, parseNrdl } from "../../nrdl";
import type { Answer, Offer } from "../../nrdl/types";
import { ARMED, doc, offer, parsedOffer, V2, v2offer, violationsOf, vm } from "./helpers";

const v2answer = (armed: string, head = 'commit="group" dedup-pages="65536"') =>
  doc(`<answer ${head}>${armed}</answer>`, V2);
const GROUP = 'strategy="switchover" max-parallel="2" commit="group"';
const QEMU = { compression: QEMU_COMPRESSION, dedup: true };
const LIBVIRT = { compression: new Set<never>() };
const CAP = 65_536;

describe("vocabulary", () => {
  test("a v2 offer says dedup on or off and builds it back byte for byte", () => {
    for (const mode of ["on", "off"]) {
      const parsed = parseNrdl(v2offer(`<policy ${GROUP} dedup="${mode}"/>`));
      expect(parsed.ok && (parsed.doc.body as Offer).policy.dedup).toBe(mode);
      if (parsed.ok) expect(buildNrdl(parsed.doc)).toContain(`commit="group" dedup="${mode}"`);
    }
  });

  test("a v1 offer cannot carry it; absent, a document stays version 1 and means off", () => {
    expect(violationsOf(offer(vm("a"), '<policy dedup="on"/>'))).toEqual([
      "/nrdl/offer/policy/@dedup: attribute dedup needs NRDL version 2 or later; this document is version 1",
    ]);
    const input = { id: "mig-1", sourceUri: "sip:dc1@10.0.0.1", destinationUri: "sip:dc2@10.0.0.2" };
    const vms = [{ name: "a", memoryMib: 64 }];
    const plain = offerDocument({ ...input, vms });
    expect(plain.version).toBe(1);
    expect(plain.body.policy.dedup).toBeUndefined();
    const deduped = offerDocument({ ...input, vms, policy: { dedup: "on" } });
    expect(minimumVersion(deduped.body)).toBe(2);
    expect(minimumVersion(withoutDedup(deduped.body))).toBe(1);
  });

  test("an unknown value is refused with its path and the values it may be (400, not ignored)", () => {
    expect(violationsOf(v2offer('<policy dedup="yes"/>'))).toEqual([
      '/nrdl/offer/policy/@dedup: expected one of on, off, got "yes"',
    ]);
    expect(violationsOf(v2offer('<policy dedup="ON"/>'))[0]).toMatch(/got "ON"$/);
    expect(violationsOf(v2offer('<policy dedup=""/>'))[0]).toMatch(/^\/nrdl\/offer\/policy\/@dedup: expected/);
    expect(violationsOf(v2answer(`<armed ${ARMED} dedup="off"/>`, ""))).toEqual([
      '/nrdl/answer/armed[1]/@dedup: expected one of on, got "off"',
    ]);
  });

  test("an armed dedup goes with xbzrle and the index cap, never with multifd; the cap only with dedup", () => {
    expect(violationsOf(v2answer(`<armed ${ARMED} dedup="on"/>`))).toEqual([]);
    expect(violationsOf(v2answer(`<armed ${ARMED} compress="xbzrle" dedup="on"/>`))).toEqual([]);
    expect(violationsOf(v2answer(`<armed ${ARMED} compress="zstd" channels="2" dedup="on"/>`))).toEqual([
      "/nrdl/answer/armed[1]/@dedup: cannot go with compress zstd (multifd)",
    ]);
    expect(violationsOf(v2answer(`<armed ${ARMED} dedup="on"/>`, 'commit="group"'))).toEqual([
      '/nrdl/answer/@dedup-pages: required when an <armed> says dedup="on"',
    ]);
    expect(violationsOf(v2answer(`<armed ${ARMED}/>`))).toEqual([
      '/nrdl/answer/@dedup-pages: allowed only when an <armed> says dedup="on"',
    ]);
    expect(violationsOf(v2answer(`<armed ${ARMED} dedup="on"/>`, 'dedup-pages="0"'))).toEqual([
      '/nrdl/answer/@dedup-pages: expected a positive integer, got "0"',
    ]);
    expect(violationsOf(doc(`<answer><armed ${ARMED} dedup="on"/></answer>`))).toEqual([
      "/nrdl/answer/armed[1]/@dedup: attribute dedup needs NRDL version 2 or later; this document is version 1",
    ]);
  });

  test("an answer and a preview with dedup read back as they were written", () => {
    const parsed = parseNrdl(v2answer(`<armed ${ARMED} dedup="on"/>`));
    expect(parsed.ok && parsed.doc.body).toMatchObject({
      commit: "group",
      dedupPages: 65536,
      armed: [{ dedup: "on" }],
    });
    // what an INVITE would get, dedup beside xbzrle; only version 2 says it
    const accepted = { vm: "a", uri: "tcp:10.0.0.2:49152", compress: "xbzrle" as const, dedup: "on" as const };
    const preview = { kind: "preview" as const, accepted: [accepted], rejected: [] };
    expect(minimumVersion(preview)).toBe(2);
    const xml = buildNrdl({ version: 2, id: "mig-1", body: preview });
    expect(xml).toContain('compress="xbzrle" dedup="on"/>');
    expect(parseNrdl(xml)).toMatchObject({ ok: true, doc: { body: preview } });
  });
});

describe("negotiation at the destination", () => {
  const on = parsedOffer(v2offer(`<policy ${GROUP} dedup="on"/>`));

  test("a v1 offer, and a v2 offer without dedup or with off, keep the plain stream", () => {
    expect(acceptReductions(parsedOffer(offer(vm("a"))), QEMU, false, CAP)).toEqual({});
    expect(acceptReductions(parsedOffer(v2offer(`<policy ${GROUP}/>`)), QEMU, true, CAP)).toEqual({});
    expect(acceptReductions(parsedOffer(v2offer(`<policy ${GROUP} dedup="off"/>`)), QEMU, true, CAP)).toEqual({});
  });

  test("on, with group commit agreed, a QEMU driver and an index: accepted; else refused", () => {
    expect(acceptReductions(on, QEMU, true, CAP)).toEqual({ dedup: "on" });
    expect(acceptReductions(on, QEMU, false, CAP)).toEqual({}); // no group commit, no dedup
    expect(acceptReductions(on, QEMU, true, 0)).toEqual({}); // this host keeps no index
    expect(acceptReductions(on, LIBVIRT, true, CAP)).toEqual({});
    expect(acceptReductions(on, undefined, true, CAP)).toEqual({});
    const postcopy = parsedOffer(v2offer(`<policy ${GROUP} convergence="postcopy" dedup="on"/>`));
    expect(acceptReductions(postcopy, QEMU, true, CAP)).toEqual({});
  });

  test("with dedup only compression that goes with it: xbzrle, never multifd; without dedup zstd as before", () => {
    const both = parsedOffer(v2offer(`<policy ${GROUP} compress="zstd zlib xbzrle" dedup="on"/>`));
    expect(acceptReductions(both, QEMU, true, CAP)).toEqual({ compress: "xbzrle", dedup: "on" });
    expect(acceptReductions(both, QEMU, true, 0)).toEqual({ compress: "zstd", channels: 2 });
    const multifd = parsedOffer(v2offer(`<policy ${GROUP} compress="zstd" dedup="on"/>`));
    expect(acceptReductions(multifd, QEMU, true, CAP)).toEqual({ dedup: "on" });
  });
});

describe("the source's offer and its check of the answer", () => {
  const capped = { bandwidthMbps: 100, convergence: "none" as const };
  const free = { bandwidthMbps: 0, convergence: "none" as const };

  test("auto offers it only for a capped group commit that some VM's driver can dedup", () => {
    expect(offerDedup("auto", capped, true, [true, undefined], CAP)).toBe("on");
    expect(offerDedup("auto", free, true, [true], CAP)).toBeUndefined();
    expect(offerDedup("auto", capped, false, [true], CAP)).toBeUndefined();
    expect(offerDedup("auto", capped, true, [undefined, false], CAP)).toBeUndefined();
    expect(offerDedup("auto", capped, true, [true], 0)).toBeUndefined();
    expect(offerDedup("auto", { bandwidthMbps: 100, convergence: "postcopy" }, true, [true], CAP)).toBeUndefined();
  });

  test("off offers nothing; on offers it capped or not, and is a usage error where it cannot be done", () => {
    expect(offerDedup("off", capped, true, [true], CAP)).toBeUndefined();
    expect(offerDedup("on", free, true, [true], CAP)).toBe("on");
    expect(() => offerDedup("on", free, false, [true], CAP)).toThrow(/: dedup on: it needs a group commit/);
    expect(() => offerDedup("on", { bandwidthMbps: 0, convergence: "postcopy" }, true, [true], CAP)).toThrow(
      /post-copy/,
    );
    expect(() => offerDedup("on", free, true, [undefined], CAP)).toThrow(/no driver of these VMs can apply it/);
    expect(() => offerDedup("on", free, true, [true], 0)).toThrow(/dedupIndexPages is 0/);
  });

  test("an answer may choose dedup only when offered, under commit=group, for a driver here that has it", () => {
    const armed = { vm: "a", uri: "tcp:10.0.0.2:1", secret: "x".repeat(16), exports: [], dedup: "on" as const };
    const group: Pick<Answer, "commit"> = { commit: "group" };
    const on = parsedOffer(v2offer(`<policy ${GROUP} dedup="on"/>`));
    expect(answeredDedup(on, group, armed, true)).toBeUndefined();
    expect(answeredDedup(on, group, { ...armed, dedup: undefined }, false)).toBeUndefined();
    expect(answeredDedup(parsedOffer(v2offer(`<policy ${GROUP}/>`)), group, armed, true)).toBe(
      "a: the answer chose dedup, which the offer did not ask for",
    );
    expect(answeredDedup(on, { commit: "source" }, armed, true)).toBe(
      'a: the answer chose dedup without commit="group"',
    );
    expect(answeredDedup(on, group, armed, undefined)).toBe(
      "a: the answer chose dedup, which this host's driver cannot apply",
    );
  });
});

describe("dedup-link: the relays' links deflated (SPEC.md 5.8)", () => {
  test("an offer lists deflate only with dedup on; an answer names it only with an armed dedup", () => {
    const parsed = parseNrdl(v2offer(`<policy ${GROUP} dedup="on" dedup-link="deflate"/>`));
    expect(parsed.ok && (parsed.doc.body as Offer).policy.dedupLink).toBe("deflate");
    if (parsed.ok) expect(buildNrdl(parsed.doc)).toContain('dedup="on" dedup-link="deflate"');
    expect(violationsOf(v2offer(`<policy ${GROUP} dedup="off" dedup-link="deflate"/>`))).toEqual([
      '/nrdl/offer/policy/@dedup-link: allowed only with dedup="on"',
    ]);
    expect(violationsOf(v2offer(`<policy ${GROUP} dedup="on" dedup-link="zstd"/>`))).toEqual([
      '/nrdl/offer/policy/@dedup-link: expected one of deflate, got "zstd"',
    ]);
    expect(violationsOf(offer(vm("a"), '<policy dedup-link="deflate"/>'))[0]).toMatch(/needs NRDL version 2/);
    const head = 'commit="group" dedup-pages="65536" dedup-link="deflate"';
    const answer = parseNrdl(v2answer(`<armed ${ARMED} dedup="on"/>`, head));
    expect(answer.ok && (answer.doc.body as Answer).dedupLink).toBe("deflate");
    expect(violationsOf(v2answer(`<armed ${ARMED}/>`, 'commit="group" dedup-link="deflate"'))).toEqual([
      '/nrdl/answer/@dedup-link: allowed only when an <armed> says dedup="on"',
    ]);
  });

  test("the source accepts a deflated link only when it offered one (else 502's reason)", () => {
    const offered = parsedOffer(v2offer(`<policy ${GROUP} dedup="on" dedup-link="deflate"/>`));
    const plain = parsedOffer(v2offer(`<policy ${GROUP} dedup="on"/>`));
    expect(answeredDedupLink(offered, { dedupLink: "deflate" })).toBeUndefined();
    expect(answeredDedupLink(offered, {})).toBeUndefined();
    expect(answeredDedupLink(plain, { dedupLink: "deflate" })).toBe(
      'the answer chose dedup-link="deflate", which the offer did not list',
    );
    expect(withoutDedup(offered).policy.dedupLink).toBeUndefined();
  });
});
