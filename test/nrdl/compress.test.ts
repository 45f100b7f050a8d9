/**
 * NRDL 2 stream reductions (nrdl/SPEC.md 5.7): `<policy compress>` in the offer, `<armed compress
 * channels>` in the answer, `<accepted compress>` in a preview; and the negotiation on both ends
 * (lib/plan/compress.ts): v1 offers and v2 offers without the attribute keep the plain stream,
 * each method is accepted by a driver that has it and refused by one that does not.
 */
import { acceptCompress, answeredReduction, offerCompress, withoutCompress } from "../../lib/plan/compress";
import { QEMU_COMPRESSION } from "../../lib/hypervisor/qemu-compress";
import { buildNrdl, minimumVersion, offerDocument, parseNrdl } from "../../nrdl";
import { COMPRESS_METHODS, type CompressMethod, type Offer } from "../../nrdl/types";
import { ARMED, doc, offer, parsedOffer, V2, v2offer, violationsOf, vm } from "./helpers";

const v2answer = (armed: string) => doc(`<answer>${armed}</answer>`, V2);
const NONE: ReadonlySet<CompressMethod> = new Set(); // libvirt, VirtualBox

describe("vocabulary", () => {
  test("a v2 offer lists methods in the source's order, and builds them back byte for byte", () => {
    const xml = v2offer('<policy compress="xbzrle zstd"/>');
    const parsed = parseNrdl(xml);
    expect(parsed.ok && (parsed.doc.body as Offer).policy.compress).toBe("xbzrle zstd");
    if (parsed.ok) expect(buildNrdl(parsed.doc)).toContain('compress="xbzrle zstd"');
  });

  test("a v1 offer cannot carry it; absent, a document stays version 1", () => {
    expect(violationsOf(offer(vm("a"), '<policy compress="zstd"/>'))).toEqual([
      "/nrdl/offer/policy/@compress: attribute compress needs NRDL version 2 or later; this document is version 1",
    ]);
    const input = { id: "mig-1", sourceUri: "sip:dc1@10.0.0.1", destinationUri: "sip:dc2@10.0.0.2" };
    const vms = [{ name: "a", memoryMib: 64 }];
    expect(offerDocument({ ...input, vms }).version).toBe(1);
    const compressed = offerDocument({ ...input, vms, policy: { compress: "zstd" } });
    expect(minimumVersion(compressed.body)).toBe(2);
    expect(minimumVersion(withoutCompress(compressed.body))).toBe(1);
  });

  test("an unknown method is refused with the path and the methods it may be (400, not ignored)", () => {
    expect(violationsOf(v2offer('<policy compress="zstd lz4"/>'))).toEqual([
      "/nrdl/offer/policy/@compress: expected space-separated stream reductions from zstd, zlib, xbzrle, " +
        'got "zstd lz4"',
    ]);
    expect(violationsOf(v2offer('<policy compress=""/>'))[0]).toMatch(/^\/nrdl\/offer\/policy\/@compress: expected/);
    expect(violationsOf(v2offer('<policy compress="ZSTD"/>'))[0]).toMatch(/got "ZSTD"$/);
    // a name from the network is never a key of a plain object
    expect(violationsOf(v2offer('<policy compress="constructor"/>'))[0]).toMatch(/got "constructor"$/);
    expect(violationsOf(v2offer('<policy compress="zstd zstd"/>'))).toEqual([
      '/nrdl/offer/policy/@compress: expected each method once, got "[\\"zstd\\",\\"zstd\\"]"',
    ]);
  });

  test("an armed multifd method names its channels; xbzrle and the plain stream name none", () => {
    expect(violationsOf(v2answer(`<armed ${ARMED} compress="zstd" channels="2"/>`))).toEqual([]);
    expect(violationsOf(v2answer(`<armed ${ARMED} compress="xbzrle"/>`))).toEqual([]);
    expect(violationsOf(v2answer(`<armed ${ARMED} compress="zlib"/>`))).toEqual([
      "/nrdl/answer/armed[1]/@channels: required when compress is zlib; expected 1 to 16",
    ]);
    expect(violationsOf(v2answer(`<armed ${ARMED} compress="xbzrle" channels="2"/>`))).toEqual([
      "/nrdl/answer/armed[1]/@channels: allowed only with compress zstd or zlib (multifd)",
    ]);
    expect(violationsOf(v2answer(`<armed ${ARMED} compress="zstd" channels="17"/>`))).toEqual([
      '/nrdl/answer/armed[1]/@channels: expected an integer from 1 to 16, got "17"',
    ]);
    expect(violationsOf(doc(`<answer><armed ${ARMED} compress="zstd" channels="2"/></answer>`))).toEqual([
      "/nrdl/answer/armed[1]/@compress: attribute compress needs NRDL version 2 or later; this document is version 1",
      "/nrdl/answer/armed[1]/@channels: attribute channels needs NRDL version 2 or later; this document is version 1",
    ]);
  });

  test("a preview says which method an INVITE would get", () => {
    const xml = doc('<preview><accepted vm="a" uri="tcp:10.0.0.2:49152" compress="zstd"/></preview>', V2);
    const parsed = parseNrdl(xml);
    expect(parsed.ok && parsed.doc.body).toEqual({
      kind: "preview",
      accepted: [{ vm: "a", uri: "tcp:10.0.0.2:49152", compress: "zstd" }],
      rejected: [],
    });
  });
});

describe("negotiation at the destination", () => {
  test("a v1 offer, and a v2 offer without compress, keep the plain stream", () => {
    expect(acceptCompress(parsedOffer(offer(vm("a"))), QEMU_COMPRESSION)).toEqual({});
    expect(acceptCompress(parsedOffer(v2offer('<policy convergence="auto-converge"/>')), QEMU_COMPRESSION)).toEqual({});
  });

  test.each(COMPRESS_METHODS)("%s offered: the QEMU driver accepts it; libvirt and VirtualBox refuse it", (m) => {
    const o = parsedOffer(v2offer(`<policy compress="${m}"/>`));
    const accepted = m === "xbzrle" ? { compress: m } : { compress: m, channels: 2 };
    expect(acceptCompress(o, QEMU_COMPRESSION)).toEqual(accepted);
    expect(acceptCompress(o, NONE)).toEqual({});
    expect(acceptCompress(o, undefined)).toEqual({});
  });

  test("the source's order decides among methods the driver has", () => {
    const o = parsedOffer(v2offer('<policy compress="xbzrle zstd"/>'));
    expect(acceptCompress(o, QEMU_COMPRESSION).compress).toBe("xbzrle");
    expect(acceptCompress(o, new Set<CompressMethod>(["zstd"])).compress).toBe("zstd");
  });

  test("post-copy takes no multifd method (QEMU 7.2 does not combine them), XBZRLE still", () => {
    const o = parsedOffer(v2offer('<policy convergence="postcopy" compress="zstd zlib"/>'));
    expect(acceptCompress(o, QEMU_COMPRESSION)).toEqual({});
    const x = parsedOffer(v2offer('<policy convergence="postcopy" compress="zstd xbzrle"/>'));
    expect(acceptCompress(x, QEMU_COMPRESSION)).toEqual({ compress: "xbzrle" });
  });
});

describe("the source's offer and its check of the answer", () => {
  const capped = { bandwidthMbps: 100, convergence: "none" as const };
  const free = { bandwidthMbps: 0, convergence: "none" as const };

  test("auto offers what any VM's driver can do, only when a cap is set", () => {
    expect(offerCompress("auto", capped, [QEMU_COMPRESSION, QEMU_COMPRESSION])).toBe("zstd zlib xbzrle");
    expect(offerCompress("auto", free, [QEMU_COMPRESSION])).toBeUndefined();
    // a libvirt VM beside QEMU ones: offered all the same, the destination arms it plain (per VM)
    expect(offerCompress("auto", capped, [QEMU_COMPRESSION, NONE])).toBe("zstd zlib xbzrle");
    expect(offerCompress("auto", capped, [NONE, undefined])).toBeUndefined();
    // post-copy moves stay plain unless a method is asked for
    expect(offerCompress("auto", { bandwidthMbps: 100, convergence: "postcopy" }, [QEMU_COMPRESSION])).toBeUndefined();
    expect(offerCompress("xbzrle", { bandwidthMbps: 100, convergence: "postcopy" }, [QEMU_COMPRESSION])).toBe("xbzrle");
  });

  test("none offers nothing; a method named is offered alone, capped or not, and refused when no driver has it", () => {
    expect(offerCompress("none", capped, [QEMU_COMPRESSION])).toBeUndefined();
    expect(offerCompress("zlib", free, [QEMU_COMPRESSION])).toBe("zlib");
    expect(() => offerCompress("zstd", free, [NONE])).toThrow(/no driver of these VMs can apply it/);
    expect(() => offerCompress("zstd", { bandwidthMbps: 0, convergence: "postcopy" }, [QEMU_COMPRESSION])).toThrow(
      /does not combine with post-copy/,
    );
  });

  test("an answer may choose only an offered method this host's driver can apply", () => {
    const o = parsedOffer(v2offer('<policy compress="zstd"/>'));
    const armed = { vm: "a", uri: "tcp:10.0.0.2:1", secret: "x".repeat(16), exports: [] };
    expect(answeredReduction(o, armed, QEMU_COMPRESSION)).toBeUndefined();
    expect(answeredReduction(o, { ...armed, compress: "zstd", channels: 2 }, QEMU_COMPRESSION)).toBeUndefined();
    expect(answeredReduction(o, { ...armed, compress: "zlib", channels: 2 }, QEMU_COMPRESSION)).toBe(
      "a: the answer chose compress zlib, which the offer did not list",
    );
    expect(answeredReduction(o, { ...armed, compress: "zstd", channels: 2 }, NONE)).toBe(
      "a: the answer chose compress zstd, which this host's driver cannot apply",
    );
  });
});
