/**
 * NRDL version 2 (nrdl/SPEC.md): disks in offers, NBD exports in answers, disk progress in status
 * and report. One case per new rule, each breaking exactly that rule in an otherwise valid v2
 * document; plus the version boundary both ways (v1 documents cannot carry v2 vocabulary, a v1
 * document reads as before) and hostile values in every new attribute.
 */
import {
  buildNrdl,
  minimumVersion,
  nrdlDocument,
  offerDocument,
  parseNrdl,
  type DiskSpec,
  type NrdlDocument,
  type Offer,
} from "../../nrdl";
import { NRDL_MAX_BYTES } from "../../nrdl/types";
import { doc, offer, violationsOf, vm } from "./helpers";

const V2 = 'xmlns="urn:sip-teleport:nrdl:2" version="2" id="mig-1"';
const v2 = (body: string) => doc(body, V2);
const v2offer = (vms: string) => offer(vms).replace(/<nrdl [^>]*>/, `<nrdl ${V2}>`);
const withDisks = (...disks: string[]) => `<vm name="a" memory-mib="64">${disks.join("")}</vm>`;
const DISK = '<disk target="vda" size-bytes="1073741824" format="qcow2" mode="copy"/>';
const TOP = '<disk target="vdb" size-bytes="1073741824" format="qcow2" mode="copy-top" backing-bytes="2147483648"/>';
const EXPORT = '<export disk="vda" uri="nbd://10.0.0.2:49200/vda" secret="0123456789abcdefXYZ"/>';
const armedWith = (children: string) =>
  `<answer><armed vm="a" uri="tcp:10.0.0.2:49152" secret="0123456789abcdef">${children}</armed></answer>`;

test("baselines: a v2 offer with disks, an answer with exports, status and report with disk figures", () => {
  expect(
    violationsOf(v2offer(withDisks(DISK, TOP, '<disk target="vdc" size-bytes="1" format="raw" mode="shared"/>'))),
  ).toEqual([]);
  expect(violationsOf(v2(armedWith(EXPORT)))).toEqual([]);
  expect(
    violationsOf(
      v2('<status vm="a" state="migrating" disk-progress="0.5" disk-transferred-bytes="10" disk-total-bytes="20"/>'),
    ),
  ).toEqual([]);
  expect(
    violationsOf(
      v2(
        '<report outcome="completed"><result vm="a" state="completed" host="dc2" disk-transferred-bytes="9"/></report>',
      ),
    ),
  ).toEqual([]);
});

test("a v2 offer reads into the model with its disks; a v1 offer reads as before, with no disks", () => {
  const parsed = parseNrdl(v2offer(withDisks(DISK, TOP)));
  expect(parsed.ok && parsed.doc.version).toBe(2);
  const vmSpec = parsed.ok ? (parsed.doc.body as Offer).vms[0] : undefined;
  expect(vmSpec?.disks).toEqual<DiskSpec[]>([
    { target: "vda", sizeBytes: 1073741824, format: "qcow2", mode: "copy" },
    { target: "vdb", sizeBytes: 1073741824, format: "qcow2", mode: "copy-top", backingBytes: 2147483648 },
  ]);
  const v1 = parseNrdl(offer(vm("a")));
  expect(v1.ok && v1.doc.version).toBe(1);
  expect(v1.ok && (v1.doc.body as Offer).vms[0].disks).toEqual([]);
});

const cases: Array<[string, string, string]> = [
  // the version boundary: v1 documents cannot say v2 things
  [
    "a disk in a v1 offer",
    offer(withDisks(DISK)),
    "/nrdl/offer/vm[1]/disk[1]: element <disk> needs NRDL version 2 or later; this document is version 1",
  ],
  [
    "an export in a v1 answer",
    doc(armedWith(EXPORT)),
    "/nrdl/answer/armed[1]/export[1]: element <export> needs NRDL version 2 or later; this document is version 1",
  ],
  [
    "disk-progress in a v1 status",
    doc('<status vm="a" state="migrating" disk-progress="0.5"/>'),
    "/nrdl/status[1]/@disk-progress: attribute disk-progress needs NRDL version 2 or later; this document is version 1",
  ],
  [
    "disk-transferred-bytes in a v1 report",
    doc('<report outcome="completed"><result vm="a" state="completed" host="h" disk-transferred-bytes="1"/></report>'),
    "/nrdl/report/result[1]/@disk-transferred-bytes: attribute disk-transferred-bytes needs NRDL version " +
      "2 or later; this document is version 1",
  ],
  [
    "a v2 document in the v1 namespace",
    v2offer(vm("a")).replace("nrdl:2", "nrdl:1"),
    '/nrdl/@xmlns: expected the namespace "urn:sip-teleport:nrdl:2", got "urn:sip-teleport:nrdl:1"',
  ],
  // <disk>
  [
    "disk without target",
    v2offer(withDisks(DISK.replace('target="vda" ', ""))),
    "/nrdl/offer/vm[1]/disk[1]/@target: required attribute missing; expected a name matching " +
      "[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
  ],
  [
    "disk target with a slash",
    v2offer(withDisks(DISK.replace('target="vda"', 'target="../etc/passwd"'))),
    '/nrdl/offer/vm[1]/disk[1]/@target: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got "../etc/passwd"',
  ],
  [
    "disk target twice in one VM",
    v2offer(withDisks(DISK, DISK)),
    '/nrdl/offer/vm[1]/disk[2]/@target: duplicate disk target "vda" (already at /nrdl/offer/vm[1]/disk[1]/@target)',
  ],
  [
    "disk size zero",
    v2offer(withDisks(DISK.replace('size-bytes="1073741824"', 'size-bytes="0"'))),
    '/nrdl/offer/vm[1]/disk[1]/@size-bytes: expected a positive integer, got "0"',
  ],
  [
    "disk size beyond 2^53",
    v2offer(withDisks(DISK.replace('size-bytes="1073741824"', 'size-bytes="99999999999999999"'))),
    '/nrdl/offer/vm[1]/disk[1]/@size-bytes: expected a positive integer, got "99999999999999999"',
  ],
  [
    "disk size with a unit",
    v2offer(withDisks(DISK.replace('size-bytes="1073741824"', 'size-bytes="1G"'))),
    '/nrdl/offer/vm[1]/disk[1]/@size-bytes: expected a positive integer, got "1G"',
  ],
  [
    "disk without size",
    v2offer(withDisks(DISK.replace('size-bytes="1073741824" ', ""))),
    "/nrdl/offer/vm[1]/disk[1]/@size-bytes: required attribute missing; expected a positive integer",
  ],
  [
    "unknown disk format",
    v2offer(withDisks(DISK.replace('format="qcow2"', 'format="vmdk"'))),
    '/nrdl/offer/vm[1]/disk[1]/@format: expected one of qcow2, raw, got "vmdk"',
  ],
  [
    "disk format in capitals",
    v2offer(withDisks(DISK.replace('format="qcow2"', 'format="QCOW2"'))),
    '/nrdl/offer/vm[1]/disk[1]/@format: expected one of qcow2, raw, got "QCOW2"',
  ],
  [
    "unknown disk mode",
    v2offer(withDisks(DISK.replace('mode="copy"', 'mode="move"'))),
    '/nrdl/offer/vm[1]/disk[1]/@mode: expected one of copy, shared, copy-top, got "move"',
  ],
  [
    "disk without mode",
    v2offer(withDisks(DISK.replace(' mode="copy"', ""))),
    "/nrdl/offer/vm[1]/disk[1]/@mode: required attribute missing; expected one of copy, shared, copy-top",
  ],
  [
    "copy-top of a raw image",
    v2offer(withDisks(TOP.replace('format="qcow2"', 'format="raw"'))),
    '/nrdl/offer/vm[1]/disk[1]/@format: expected qcow2 when mode is copy-top, got "raw"',
  ],
  [
    "copy-top without backing-bytes",
    v2offer(withDisks(TOP.replace(' backing-bytes="2147483648"', ""))),
    "/nrdl/offer/vm[1]/disk[1]/@backing-bytes: required when mode is copy-top; expected a positive integer",
  ],
  [
    "backing-bytes on a full copy",
    v2offer(withDisks(DISK.replace("/>", ' backing-bytes="5"/>'))),
    '/nrdl/offer/vm[1]/disk[1]/@backing-bytes: only a copy-top disk has a backing image, got mode "copy"',
  ],
  [
    "backing-bytes negative",
    v2offer(withDisks(TOP.replace('backing-bytes="2147483648"', 'backing-bytes="-1"'))),
    '/nrdl/offer/vm[1]/disk[1]/@backing-bytes: expected a positive integer, got "-1"',
  ],
  [
    "unknown disk attribute",
    v2offer(withDisks(DISK.replace("/>", ' file="/etc/shadow"/>'))),
    "/nrdl/offer/vm[1]/disk[1]/@file: unexpected attribute; <disk> takes target, size-bytes, format, " +
      "mode, backing-bytes",
  ],
  [
    "disk outside a vm",
    v2offer(vm("a") + DISK),
    "/nrdl/offer/disk[1]: unexpected element <disk>; <offer> contains <source>, <destination>, <policy>, <vm>",
  ],
  // <export>
  [
    "export without disk",
    v2(armedWith(EXPORT.replace('disk="vda" ', ""))),
    "/nrdl/answer/armed[1]/export[1]/@disk: required attribute missing; expected a name matching " +
      "[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
  ],
  [
    "export for the same disk twice",
    v2(armedWith(EXPORT + EXPORT)),
    '/nrdl/answer/armed[1]/export[2]/@disk: duplicate disk "vda" (already at /nrdl/answer/armed[1]/export[1]/@disk)',
  ],
  [
    "export URI of another scheme",
    v2(armedWith(EXPORT.replace("nbd://", "http://"))),
    "/nrdl/answer/armed[1]/export[1]/@uri: expected an NBD URI nbd://HOST:PORT/EXPORT (HOST an IPv4 " +
      'address, [IPv6] or host name; EXPORT a name), got "http://10.0.0.2:49200/vda"',
  ],
  [
    "export URI without an export name",
    v2(armedWith(EXPORT.replace("49200/vda", "49200/"))),
    "/nrdl/answer/armed[1]/export[1]/@uri: expected an NBD URI nbd://HOST:PORT/EXPORT (HOST an IPv4 " +
      'address, [IPv6] or host name; EXPORT a name), got "nbd://10.0.0.2:49200/"',
  ],
  [
    "export URI port out of range",
    v2(armedWith(EXPORT.replace("49200", "65536"))),
    "/nrdl/answer/armed[1]/export[1]/@uri: expected an NBD URI nbd://HOST:PORT/EXPORT (HOST an IPv4 " +
      'address, [IPv6] or host name; EXPORT a name), got "nbd://10.0.0.2:65536/vda"',
  ],
  [
    "export URI with a query (QEMU would read options from it)",
    v2(armedWith(EXPORT.replace("/vda", "/vda?socket=/tmp/x"))),
    "/nrdl/answer/armed[1]/export[1]/@uri: expected an NBD URI nbd://HOST:PORT/EXPORT (HOST an IPv4 " +
      'address, [IPv6] or host name; EXPORT a name), got "nbd://10.0.0.2:49200/vda?socket=/tmp/x"',
  ],
  [
    "export secret too short",
    v2(armedWith(EXPORT.replace("0123456789abcdefXYZ", "short"))),
    "/nrdl/answer/armed[1]/export[1]/@secret: expected a secret of 16 to 128 characters from " +
      '[A-Za-z0-9_-], got "short"',
  ],
  [
    "export secret with a quote",
    v2(armedWith(EXPORT.replace("0123456789abcdefXYZ", "0123456789abcdef&quot;x"))),
    "/nrdl/answer/armed[1]/export[1]/@secret: expected a secret of 16 to 128 characters from " +
      '[A-Za-z0-9_-], got "0123456789abcdef\\"x"',
  ],
  [
    "export outside armed",
    v2(`<answer><armed vm="a" uri="tcp:10.0.0.2:49152" secret="0123456789abcdef"/>${EXPORT}</answer>`),
    "/nrdl/answer/export[1]: unexpected element <export>; <answer> contains <armed>, <rejected>",
  ],
  // status and report figures
  [
    "disk-progress above 1",
    v2('<status vm="a" state="migrating" disk-progress="1.5"/>'),
    '/nrdl/status[1]/@disk-progress: expected a number from 0 to 1 with at most 4 decimals, got "1.5"',
  ],
  [
    "disk-transferred-bytes negative",
    v2('<status vm="a" state="migrating" disk-transferred-bytes="-3"/>'),
    '/nrdl/status[1]/@disk-transferred-bytes: expected a non-negative integer, got "-3"',
  ],
  [
    "disk-total-bytes in exponent form",
    v2('<status vm="a" state="migrating" disk-total-bytes="1e9"/>'),
    '/nrdl/status[1]/@disk-total-bytes: expected a non-negative integer, got "1e9"',
  ],
  [
    "report disk-transferred-bytes with a sign",
    v2('<report outcome="completed"><result vm="a" state="completed" host="h" disk-transferred-bytes="+1"/></report>'),
    '/nrdl/report/result[1]/@disk-transferred-bytes: expected a non-negative integer, got "+1"',
  ],
];

test.each(cases)("rejects: %s", (_rule, xml, line) => {
  expect(violationsOf(xml)).toContain(line);
});

test("disks nest at the deepest level allowed; anything under them is too deep", () => {
  const deeper = v2offer(withDisks(DISK.replace("/>", "><x/></disk>")));
  expect(violationsOf(deeper).join("\n")).toMatch(/elements nest deeper than 4 levels/);
});

test("64 KiB of disks is refused by size before any parsing, and 500 disks are read quickly", () => {
  const many = (n: number) =>
    v2offer(withDisks(...Array.from({ length: n }, (_x, i) => DISK.replace('target="vda"', `target="d${i}"`))));
  const huge = many(2000);
  expect(Buffer.byteLength(huge)).toBeGreaterThan(NRDL_MAX_BYTES);
  expect(violationsOf(huge)).toEqual([expect.stringMatching(/^\/: document is \d+ bytes; NRDL documents are at most/)]);
  const started = performance.now();
  expect(violationsOf(many(500))).toEqual([]);
  expect(performance.now() - started).toBeLessThan(1000);
});

test("a document is written in the lowest version that can say it; a dialog can pin its version", () => {
  const plain = offerDocument({
    id: "m",
    sourceUri: "sip:a@h",
    destinationUri: "sip:b@h",
    vms: [{ name: "a", memoryMib: 64 }],
  });
  expect(plain.version).toBe(1);
  const disk: DiskSpec = { target: "vda", sizeBytes: 1 << 20, format: "raw", mode: "copy" };
  const withDisk = offerDocument({
    id: "m",
    sourceUri: "sip:a@h",
    destinationUri: "sip:b@h",
    vms: [{ name: "a", memoryMib: 64, disks: [disk] }],
  });
  expect(withDisk.version).toBe(2);
  expect(buildNrdl(withDisk)).toContain('<nrdl xmlns="urn:sip-teleport:nrdl:2" version="2" id="m">');
  expect(minimumVersion({ kind: "status", statuses: [{ vm: "a", state: "migrating", diskProgress: 0.5 }] })).toBe(2);
  // a v2 dialog's status without disk figures still goes out as v2
  const pinned = nrdlDocument("m", { kind: "status", statuses: [{ vm: "a", state: "migrating" }] }, 2);
  expect(buildNrdl(pinned)).toContain('version="2"');
  // and nothing v2 can be built into a v1 document
  const wrong: NrdlDocument<Offer> = { ...withDisk, version: 1 };
  expect(() => buildNrdl(wrong)).toThrow(/element <disk> needs NRDL version 2/);
});

test("a v2 offer round-trips through build and parse", () => {
  const parsed = parseNrdl(v2offer(withDisks(DISK, TOP)));
  if (!parsed.ok) throw new Error(parsed.violations.map((v) => v.message).join("\n"));
  const again = parseNrdl(buildNrdl(parsed.doc));
  expect(again.ok && again.doc).toEqual(parsed.doc);
});
