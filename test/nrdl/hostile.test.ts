/**
 * Hostile XML is refused before any XML parser runs, quickly and with a reason. The time bound is
 * deliberately loose (1 s on a 64 KiB input): it catches super-linear blow-ups, not regressions.
 */
import { NRDL_MAX_BYTES } from "../../nrdl";
import { doc, offer, violationsOf, vm } from "./helpers";

function refusedQuickly(xml: string): string[] {
  const started = performance.now();
  const lines = violationsOf(xml);
  expect(performance.now() - started).toBeLessThan(1000);
  return lines;
}

const lol = (n: number) => `<!ENTITY lol${n} "${`&lol${n - 1};`.repeat(10)}">`;
const billionLaughs = `<?xml version="1.0"?>
<!DOCTYPE nrdl [
  <!ENTITY lol0 "lol">
  ${Array.from({ length: 9 }, (_x, i) => lol(i + 1)).join("\n  ")}
]>
<nrdl xmlns="urn:sip-teleport:nrdl:1" version="1" id="&lol9;"><status vm="a" state="failed" reason="&lol9;"/></nrdl>`;

/** A valid document padded with a comment to exactly `bytes` bytes (`unit` may be multi-byte). */
function padded(bytes: number, unit = "x"): string {
  const base = offer(vm("a"));
  const room = bytes - Buffer.byteLength(base) - "<!---->".length;
  const units = unit.repeat(Math.floor(room / Buffer.byteLength(unit)));
  return `${base}<!--${units}${"x".repeat(room - Buffer.byteLength(units))}-->`;
}

test("billion laughs: DOCTYPE and entity declarations refused, nothing expanded", () => {
  expect(refusedQuickly(billionLaughs)).toEqual([
    "/: line 2, column 1: <!DOCTYPE> is not allowed (NRDL has no DTD and no entities)",
    "/: line 3, column 3: <!ENTITY> is not allowed (NRDL has no DTD and no entities)",
  ]);
});

test("external entity (XXE) refused", () => {
  const xxe =
    `<!DOCTYPE nrdl [<!ENTITY xxe SYSTEM ` +
    `"file:///etc/passwd">]>${doc('<status vm="a" state="failed" reason="&xxe;"/>')}`;
  expect(refusedQuickly(xxe)).toEqual([
    "/: line 1, column 1: <!DOCTYPE> is not allowed (NRDL has no DTD and no entities)",
    "/: line 1, column 17: <!ENTITY> is not allowed (NRDL has no DTD and no entities)",
  ]);
});

test("a bare DOCTYPE is refused too", () => {
  expect(refusedQuickly(`<!DOCTYPE nrdl>${offer(vm("a"))}`)).toEqual([
    "/: line 1, column 1: <!DOCTYPE> is not allowed (NRDL has no DTD and no entities)",
  ]);
});

test("an undeclared entity reference is refused, not looked up", () => {
  expect(refusedQuickly(doc('<status vm="a" state="failed" reason="&xxe;"/>'))).toEqual([
    "/nrdl/status[1]/@reason: expected text of 1 to 1024 characters without control characters, " +
      "got an undefined entity &xxe; (only &lt; &gt; &amp; &quot; &apos; and &#N; exist)",
  ]);
});

test("size: 64 KiB exactly is accepted, one byte more is refused, counted in bytes not characters", () => {
  expect(Buffer.byteLength(padded(NRDL_MAX_BYTES))).toBe(NRDL_MAX_BYTES);
  expect(violationsOf(padded(NRDL_MAX_BYTES))).toEqual([]);
  expect(refusedQuickly(padded(NRDL_MAX_BYTES + 1))).toEqual([
    "/: document is 65537 bytes; NRDL documents are at most 65536 bytes",
  ]);
  const multiByte = padded(NRDL_MAX_BYTES + 3, "☺");
  expect(multiByte.length).toBeLessThan(NRDL_MAX_BYTES);
  expect(refusedQuickly(multiByte)).toEqual(["/: document is 65539 bytes; NRDL documents are at most 65536 bytes"]);
  expect(refusedQuickly(`${offer(vm("a"))}<!--${"x".repeat(65 * 1024)}-->`)).toEqual([
    `/: document is ${65 * 1024 + Buffer.byteLength(offer(vm("a"))) + 7} bytes; NRDL documents are at most 65536 bytes`,
  ]);
});

const TOO_DEEP =
  "/: line 1, column %d: elements nest deeper than 4 levels (the deepest NRDL path is nrdl > offer > vm > " +
  "depends-on or disk, nrdl > answer > armed > export)";

test("nesting: depends-on is the deepest level; one level more is refused, even self-closing", () => {
  expect(violationsOf(offer(vm("b") + vm("a", "", ["b"])))).toEqual([]);
  const fifth = offer(vm("b") + vm("a", "", ["b"])).replace(
    '<depends-on vm="b"/>',
    '<depends-on vm="b"><x/></depends-on>',
  );
  expect(refusedQuickly(fifth)).toEqual([TOO_DEEP.replace("%d", String(fifth.indexOf("<x/>") + 1))]);
});

test("nesting: 64 KiB of open tags is refused before a recursive parser could overflow its stack", () => {
  const deep = "<a>".repeat(Math.floor(NRDL_MAX_BYTES / 3));
  expect(refusedQuickly(deep)).toEqual([TOO_DEEP.replace("%d", "13")]);
});

test("nesting: stray end tags first do not buy extra depth", () => {
  const xml = `${"</a>".repeat(10)}${"<a>".repeat(5)}`;
  expect(refusedQuickly(xml)).toEqual([TOO_DEEP.replace("%d", String(10 * 4 + 4 * 3 + 1))]);
});

test("huge attribute: refused with a bounded message", () => {
  const reason = "A".repeat(60 * 1024);
  const lines = refusedQuickly(doc(`<status vm="a" state="failed" reason="${reason}"/>`));
  expect(lines).toEqual([
    `/nrdl/status[1]/@reason: expected text of 1 to 1024 characters without control characters, ` +
      `got "${"A".repeat(40)}… (61440 characters)"`,
  ]);
});

test("thousands of attributes on one element: refused fast, one line each", () => {
  const attrs = Array.from({ length: 4000 }, (_x, i) => `a${i}="1"`).join(" ");
  const lines = refusedQuickly(offer(`<vm name="a" memory-mib="1" ${attrs}/>`));
  expect(lines).toHaveLength(4000);
  expect(lines[0]).toBe(
    "/nrdl/offer/vm[1]/@a0: unexpected attribute; <vm> takes name, hypervisor, role, memory-mib, cpus",
  );
});

test("a 1000-VM dependency ring is refused fast and the cycle is named", () => {
  const n = 1000;
  const vms = Array.from(
    { length: n },
    (_x, i) => `<vm name="v${i}" memory-mib="1"><depends-on vm="v${(i + 1) % n}"/></vm>`,
  ).join("");
  const lines = refusedQuickly(offer(vms));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^\/nrdl\/offer\/vm\[1\]: dependency cycle v0 -> v1 -> v2 -> .* -> v999 -> v0$/);
});

test.each([
  [
    "a processing instruction",
    `<?xml-stylesheet href="x"?>${offer(vm("a"))}`,
    "/: line 1, column 1: processing instructions are not allowed (only a leading <?xml ...?> declaration)",
  ],
  [
    "an XML declaration not first",
    ` <?xml version="1.0"?>${offer(vm("a"))}`,
    "/: line 1, column 2: the XML declaration must come first",
  ],
  [
    "a non-UTF-8 encoding",
    `<?xml version="1.0" encoding="ISO-8859-1"?>${offer(vm("a"))}`,
    '/: line 1, column 1: encoding must be UTF-8, got "ISO-8859-1"',
  ],
  [
    "CDATA",
    offer(vm("a") + "<![CDATA[<vm/>]]>"),
    `/: line 1, column ${offer(vm("a")).indexOf("</offer>") + 1}: CDATA sections are not ` +
      `allowed (no NRDL element has text content)`,
  ],
  [
    "an unterminated attribute quote",
    '<nrdl id="abc',
    "/: malformed XML at line 1, column 6: Attributes for 'nrdl' have open quote.",
  ],
  [
    "an unterminated comment",
    `${offer(vm("a"))}<!-- open`,
    `/: line 1, column ${offer(vm("a")).length + 1}: unterminated markup: no "-->" after this point`,
  ],
  [
    "an unterminated CDATA section",
    `${offer(vm("a"))}<![CDATA[`,
    `/: line 1, column ${offer(vm("a")).length + 1}: unterminated markup: no "]]>" after this point`,
  ],
])("refuses %s", (_what, xml, line) => {
  expect(refusedQuickly(xml)).toContain(line);
});
