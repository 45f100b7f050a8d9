/**
 * One case per NRDL v1 rule (nrdl/SPEC.md): each breaks exactly one rule in an otherwise valid
 * document and expects the violation line the rule produces, so a rule that stops firing fails here.
 */
import { TeleportError } from "../../lib/errors";
import {
  buildNrdl,
  exampleOffer,
  parseNrdl,
  parseNrdlOrThrow,
  validateNrdl,
  type NrdlDocument,
  type Offer,
} from "../../nrdl";
import { NS, doc, offer, violationsOf, vm } from "./helpers";

const ONE_BODY =
  "/nrdl: expected one body: one <offer>, <answer>, <report>, <preview>, <capacity>, <recover>, <recovery>, " +
  "<switchover>, <abort>, <decision> or <decision-query>, or one or more <status>; found";

const A = vm("a");
const armed = (vmName: string) => `<armed vm="${vmName}" uri="tcp:10.0.0.2:49152" secret="0123456789abcdef"/>`;

test("the helpers' baseline documents are valid (so each case below breaks only its rule)", () => {
  expect(violationsOf(offer(A))).toEqual([]);
  expect(violationsOf(doc(`<answer>${armed("a")}</answer>`))).toEqual([]);
  expect(violationsOf(doc('<status vm="a" state="migrating"/><status vm="b" state="completed"/>'))).toEqual([]);
  expect(
    violationsOf(doc('<report outcome="completed"><result vm="a" state="completed" host="dc2"/></report>')),
  ).toEqual([]);
});

const cases: Array<[string, string, string]> = [
  // namespace, version, id, root
  [
    "wrong namespace",
    offer(A).replace(NS, 'xmlns="urn:example:other"'),
    '/nrdl/@xmlns: expected the namespace "urn:sip-teleport:nrdl:1", got "urn:example:other"',
  ],
  [
    "missing namespace",
    offer(A).replace(NS, ""),
    '/nrdl/@xmlns: expected the namespace "urn:sip-teleport:nrdl:1", got none',
  ],
  [
    "unsupported version",
    offer(A).replace('version="1"', 'version="3"').replace("nrdl:1", "nrdl:3"),
    "/nrdl/@version: unsupported version 3; this build speaks NRDL versions 1, 2",
  ],
  [
    "version not a number",
    offer(A).replace('version="1"', 'version="1.0"'),
    '/nrdl/@version: expected a positive integer, got "1.0"',
  ],
  [
    "missing version",
    offer(A).replace('version="1"', ""),
    "/nrdl/@version: required attribute missing; expected a positive integer",
  ],
  [
    "missing id",
    offer(A).replace('id="mig-1"', ""),
    "/nrdl/@id: required attribute missing; expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}",
  ],
  [
    "id with shell metacharacters",
    offer(A).replace('id="mig-1"', 'id="x;reboot"'),
    '/nrdl/@id: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got "x;reboot"',
  ],
  [
    "wrong root element",
    offer(A).replace(/nrdl/g, "nrdx"),
    '/: expected one root element <nrdl xmlns="urn:sip-teleport:nrdl:VERSION">, found <nrdx>',
  ],
  [
    "prefixed root element",
    `<n:nrdl xmlns:n="urn:sip-teleport:nrdl:1" version="1" id="m"><n:offer/></n:nrdl>`,
    '/: expected one root element <nrdl xmlns="urn:sip-teleport:nrdl:VERSION">, found <n:nrdl>',
  ],
  [
    "two root elements",
    offer(A) + offer(A),
    "/: malformed XML at line 1, column 243: Multiple possible root nodes found.",
  ],
  [
    "two empty root elements",
    `<nrdl ${NS}/><nrdl ${NS}/>`,
    '/: expected one root element <nrdl xmlns="urn:sip-teleport:nrdl:VERSION">, found <nrdl>, <nrdl>',
  ],
  ["empty document", "", "/: malformed XML at line 1: Start tag expected."],
  // bodies
  ["no body", doc(""), ONE_BODY + " none"],
  [
    "two bodies of different kinds",
    doc(`<answer>${armed("a")}</answer><status vm="a" state="failed"/>`),
    ONE_BODY + " <answer>, <status>",
  ],
  ["two offers", offer(A).replace("</nrdl>", "<offer/></nrdl>"), ONE_BODY + " <offer>, <offer>"],
  // unknown elements and attributes, text
  [
    "unknown element in offer",
    offer(A + "<network/>"),
    "/nrdl/offer/network: unexpected element <network>; <offer> contains <source>, <destination>, <policy>, <vm>",
  ],
  [
    "unknown element at the root",
    offer(A).replace("</nrdl>", "<extension/></nrdl>"),
    "/nrdl/extension: unexpected element <extension>; <nrdl> contains " +
      "<offer>, <answer>, <report>, <status>, <preview>, <capacity>, <recover>, <recovery>, " +
      "<switchover>, <abort>, <decision>, <decision-query>",
  ],
  [
    "element inside a leaf",
    offer(vm("a")).replace('<source uri="sip:dc1@10.0.0.1"/>', '<source uri="sip:dc1@10.0.0.1"><vm/></source>'),
    "/nrdl/offer/source/vm[1]: unexpected element <vm>; <source> has no child elements",
  ],
  [
    "unknown attribute on vm",
    offer(vm("a", 'colour="red"')),
    "/nrdl/offer/vm[1]/@colour: unexpected attribute; <vm> takes name, hypervisor, role, memory-mib, cpus",
  ],
  [
    "attribute on offer",
    offer(A).replace("<offer>", '<offer priority="1">'),
    "/nrdl/offer/@priority: unexpected attribute; <offer> takes no attributes",
  ],
  [
    "foreign namespace declaration",
    offer(A).replace(NS, `${NS} xmlns:x="urn:x"`),
    "/nrdl/@xmlns:x: unexpected attribute; <nrdl> takes version, id",
  ],
  ["text content", offer(A + "hello"), '/nrdl/offer: text content is not allowed here, got "hello"'],
  // required elements and attributes, singletons
  [
    "missing source",
    offer(A).replace('<source uri="sip:dc1@10.0.0.1"/>', ""),
    "/nrdl/offer/source: required element missing",
  ],
  ["two policies", offer(A, "<policy/><policy/>"), "/nrdl/offer/policy: expected one <policy>, found 2"],
  ["offer without VMs", offer(""), "/nrdl/offer/vm[1]: required element missing; an offer names at least one <vm>"],
  [
    "vm without memory-mib",
    offer('<vm name="a"/>'),
    "/nrdl/offer/vm[1]/@memory-mib: required attribute missing; expected a positive integer",
  ],
  // names
  [
    "name with ../",
    offer(vm("../etc")),
    '/nrdl/offer/vm[1]/@name: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got "../etc"',
  ],
  [
    "name with a slash",
    offer(vm("a/b")),
    '/nrdl/offer/vm[1]/@name: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got "a/b"',
  ],
  [
    "name with $( )",
    offer(vm("$(reboot)")),
    '/nrdl/offer/vm[1]/@name: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got "$(reboot)"',
  ],
  [
    "name with ; and spaces",
    offer(vm("a; rm -rf /")),
    '/nrdl/offer/vm[1]/@name: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got "a; rm -rf /"',
  ],
  [
    "name looking like an option",
    offer(vm("-rf")),
    '/nrdl/offer/vm[1]/@name: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got "-rf"',
  ],
  [
    "name with a backtick",
    offer(vm("a`id`")),
    '/nrdl/offer/vm[1]/@name: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got "a`id`"',
  ],
  [
    "name of 65 characters",
    offer(vm("a".repeat(65))),
    `/nrdl/offer/vm[1]/@name: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got ` +
      `"${"a".repeat(40)}… (65 characters)"`,
  ],
  [
    "empty name",
    offer(vm("")),
    '/nrdl/offer/vm[1]/@name: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got ""',
  ],
  [
    "duplicate VM names",
    offer(vm("a") + vm("b") + vm("a")),
    '/nrdl/offer/vm[3]/@name: duplicate VM name "a" (already at /nrdl/offer/vm[1]/@name)',
  ],
  // dependencies
  [
    "depends-on naming no VM",
    offer(vm("a", "", ["ghost"])),
    '/nrdl/offer/vm[1]/depends-on[1]/@vm: expected the name of a VM in this offer, got "ghost"',
  ],
  [
    "depends-on twice the same VM",
    offer(vm("a") + vm("b", "", ["a", "a"])),
    '/nrdl/offer/vm[2]/depends-on[2]/@vm: duplicate depends-on "a" (already at /nrdl/offer/vm[2]/depends-on[1]/@vm)',
  ],
  ["self-cycle", offer(vm("a", "", ["a"])), "/nrdl/offer/vm[1]: dependency cycle a -> a"],
  ["two-VM cycle", offer(vm("a", "", ["b"]) + vm("b", "", ["a"])), "/nrdl/offer/vm[1]: dependency cycle a -> b -> a"],
  [
    "three-VM cycle behind a valid VM",
    offer(vm("x") + vm("a", "", ["x", "c"]) + vm("b", "", ["a"]) + vm("c", "", ["b"])),
    "/nrdl/offer/vm[2]: dependency cycle a -> c -> b -> a",
  ],
  // enumerations
  [
    "bad hypervisor",
    offer(vm("a", 'hypervisor="xen"')),
    '/nrdl/offer/vm[1]/@hypervisor: expected one of qemu, virtualbox, libvirt, got "xen"',
  ],
  [
    "bad role",
    offer(vm("a", 'role="Router"')),
    '/nrdl/offer/vm[1]/@role: expected one of router, switch, firewall, nat, server, storage, other, got "Router"',
  ],
  [
    "bad strategy",
    offer(A, '<policy strategy="random"/>'),
    '/nrdl/offer/policy/@strategy: expected one of sequential, parallel, switchover, got "random"',
  ],
  [
    "bad on-error",
    offer(A, '<policy on-error="retry"/>'),
    '/nrdl/offer/policy/@on-error: expected one of abort, continue, got "retry"',
  ],
  [
    "bad state",
    doc('<status vm="a" state="done"/>'),
    '/nrdl/status[1]/@state: expected one of migrating, completed, failed, aborted, got "done"',
  ],
  [
    "bad outcome",
    doc('<report outcome="ok"><result vm="a" state="completed" host="dc2"/></report>'),
    '/nrdl/report/@outcome: expected one of completed, partial, failed, got "ok"',
  ],
  // numbers
  [
    "negative memory",
    offer(vm("a").replace('memory-mib="64"', 'memory-mib="-5"')),
    '/nrdl/offer/vm[1]/@memory-mib: expected a positive integer, got "-5"',
  ],
  [
    "zero memory",
    offer(vm("a").replace('memory-mib="64"', 'memory-mib="0"')),
    '/nrdl/offer/vm[1]/@memory-mib: expected a positive integer, got "0"',
  ],
  ["fractional cpus", offer(vm("a", 'cpus="1.5"')), '/nrdl/offer/vm[1]/@cpus: expected a positive integer, got "1.5"'],
  ["leading zero", offer(vm("a", 'cpus="01"')), '/nrdl/offer/vm[1]/@cpus: expected a positive integer, got "01"'],
  [
    "exponent",
    offer(vm("a").replace('memory-mib="64"', 'memory-mib="1e3"')),
    '/nrdl/offer/vm[1]/@memory-mib: expected a positive integer, got "1e3"',
  ],
  [
    "beyond 2^53",
    offer(vm("a").replace('memory-mib="64"', 'memory-mib="9007199254740993"')),
    '/nrdl/offer/vm[1]/@memory-mib: expected a positive integer, got "9007199254740993"',
  ],
  [
    "negative bandwidth",
    offer(A, '<policy bandwidth-mbps="-1"/>'),
    '/nrdl/offer/policy/@bandwidth-mbps: expected a non-negative integer, got "-1"',
  ],
  [
    "zero timeout",
    offer(A, '<policy timeout-s="0"/>'),
    '/nrdl/offer/policy/@timeout-s: expected a positive integer, got "0"',
  ],
  [
    "sequential with max-parallel 3",
    offer(A, '<policy max-parallel="3"/>'),
    '/nrdl/offer/policy/@max-parallel: expected 1 when strategy is sequential, got "3"',
  ],
  [
    "progress above 1",
    doc('<status vm="a" state="migrating" progress="1.5"/>'),
    '/nrdl/status[1]/@progress: expected a number from 0 to 1 with at most 4 decimals, got "1.5"',
  ],
  [
    "progress with 5 decimals",
    doc('<status vm="a" state="migrating" progress="0.12345"/>'),
    '/nrdl/status[1]/@progress: expected a number from 0 to 1 with at most 4 decimals, got "0.12345"',
  ],
  [
    "negative downtime",
    doc('<status vm="a" state="completed" downtime-ms="-3"/>'),
    '/nrdl/status[1]/@downtime-ms: expected a non-negative integer, got "-3"',
  ],
  // URIs, secrets, text
  [
    "source not a SIP URI",
    offer(A).replace("sip:dc1@10.0.0.1", "http://dc1"),
    "/nrdl/offer/source/@uri: expected a sip: or sips: URI of at most 256 printable characters " +
      'without spaces, got "http://dc1"',
  ],
  [
    "migration URI port out of range",
    doc(`<answer>${armed("a").replace("49152", "70000")}</answer>`),
    "/nrdl/answer/armed[1]/@uri: expected a migration URI tcp:HOST:PORT (HOST an IPv4 address, " +
      '[IPv6] or host name; PORT 1-65535), got "tcp:10.0.0.2:70000"',
  ],
  [
    "migration URI that is a command",
    doc(`<answer>${armed("a").replace("tcp:10.0.0.2:49152", "exec:sh -c reboot")}</answer>`),
    "/nrdl/answer/armed[1]/@uri: expected a migration URI tcp:HOST:PORT (HOST an IPv4 address, " +
      '[IPv6] or host name; PORT 1-65535), got "exec:sh -c reboot"',
  ],
  [
    "short secret",
    doc(`<answer>${armed("a").replace("0123456789abcdef", "abc")}</answer>`),
    '/nrdl/answer/armed[1]/@secret: expected a secret of 16 to 128 characters from [A-Za-z0-9_-], got "abc"',
  ],
  [
    "reason with a newline",
    doc('<answer><rejected vm="a" reason="no&#10;memory"/></answer>'),
    "/nrdl/answer/rejected[1]/@reason: expected text of 1 to 1024 characters without control " +
      'characters, got "no\\nmemory"',
  ],
  [
    "undefined entity",
    doc('<answer><rejected vm="a" reason="&foo;"/></answer>'),
    "/nrdl/answer/rejected[1]/@reason: expected text of 1 to 1024 characters without control " +
      "characters, got an undefined entity &foo; (only &lt; &gt; &amp; &quot; &apos; and &#N; exist)",
  ],
  [
    "raw < in an attribute",
    doc('<answer><rejected vm="a" reason="a<b"/></answer>'),
    "/nrdl/answer/rejected[1]/@reason: expected text of 1 to 1024 characters without control " +
      'characters, got a raw "<" in an attribute value (write &lt;)',
  ],
  // answers, statuses, reports
  ["empty answer", doc("<answer/>"), "/nrdl/answer: expected at least one <armed> or <rejected>"],
  [
    "VM both armed and rejected",
    doc(`<answer>${armed("a")}<rejected vm="a" reason="full"/></answer>`),
    '/nrdl/answer/rejected[1]/@vm: duplicate VM "a" (already at /nrdl/answer/armed[1]/@vm)',
  ],
  [
    "VM twice in one INFO",
    doc('<status vm="a" state="migrating"/><status vm="a" state="failed"/>'),
    '/nrdl/status[2]/@vm: duplicate VM "a" (already at /nrdl/status[1]/@vm)',
  ],
  [
    "report without results",
    doc('<report outcome="failed"/>'),
    "/nrdl/report/result[1]: required element missing; a report has at least one <result>",
  ],
  [
    "result without host",
    doc('<report outcome="failed"><result vm="a" state="failed"/></report>'),
    "/nrdl/report/result[1]/@host: required attribute missing; expected text of 1 to 256 " +
      "characters without control characters",
  ],
  // well-formedness
  [
    "malformed XML",
    "<nrdl><offer></nrdl>",
    "/: malformed XML at line 1, column 14: Expected closing tag 'offer' (opened in line 1, col " +
      "7) instead of closing tag 'nrdl'.",
  ],
  [
    "repeated attribute",
    offer(vm("a", 'cpus="1" cpus="2"')),
    "/: malformed XML at line 1, column 176: Attribute 'cpus' is repeated.",
  ],
];

test.each(cases)("rejects: %s", (_rule, xml, line) => {
  expect(violationsOf(xml)).toContain(line);
});

test("every violation comes back at once, each once", () => {
  const xml = offer(
    vm("../a", 'role="king"') + vm("b").replace('memory-mib="64"', 'memory-mib="-5"') + vm("b", "", ["ghost"]) + "<x/>",
    '<policy strategy="fast" foo="1"/>',
  )
    .replace(NS, 'xmlns="urn:nope"')
    .replace('version="1"', 'version="3"');
  const lines = violationsOf(xml);
  expect(lines.sort()).toEqual(
    [
      '/nrdl/@xmlns: expected the namespace "urn:sip-teleport:nrdl:" and the version, got "urn:nope"',
      "/nrdl/@version: unsupported version 3; this build speaks NRDL versions 1, 2",
      "/nrdl/offer/x: unexpected element <x>; <offer> contains <source>, <destination>, <policy>, <vm>",
      '/nrdl/offer/policy/@strategy: expected one of sequential, parallel, switchover, got "fast"',
      "/nrdl/offer/policy/@foo: unexpected attribute; <policy> takes strategy, max-parallel, " +
        "bandwidth-mbps, downtime-limit-ms, timeout-s, on-error, convergence, commit, compress, dedup, dedup-link",
      '/nrdl/offer/vm[1]/@name: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got "../a"',
      '/nrdl/offer/vm[1]/@role: expected one of router, switch, firewall, nat, server, storage, other, got "king"',
      '/nrdl/offer/vm[2]/@memory-mib: expected a positive integer, got "-5"',
      '/nrdl/offer/vm[3]/@name: duplicate VM name "b" (already at /nrdl/offer/vm[2]/@name)',
      '/nrdl/offer/vm[3]/depends-on[1]/@vm: expected the name of a VM in this offer, got "ghost"',
    ].sort(),
  );
});

test("defaults are filled in: policy, hypervisor, role, cpus; max-parallel follows the strategy", () => {
  const parsed = parseNrdl(offer(vm("a") + vm("b")));
  expect(parsed.ok && parsed.doc.body).toMatchObject({
    policy: {
      strategy: "sequential",
      maxParallel: 1,
      bandwidthMbps: 0,
      downtimeLimitMs: 300,
      timeoutS: 600,
      onError: "abort",
    },
    vms: [{ name: "a", hypervisor: "qemu", role: "other", cpus: 1, memoryMib: 64, dependsOn: [] }, { name: "b" }],
  });
  const parallel = parseNrdl(offer(vm("a") + vm("b") + vm("c"), '<policy strategy="parallel"/>'));
  expect(parallel.ok && (parallel.doc.body as Offer).policy.maxParallel).toBe(3);
});

test("comments, an XML declaration, a BOM and character references are accepted", () => {
  const xml =
    `\uFEFF<?xml version="1.0" encoding="utf-8"?>\n<!-- c ` +
    `-->${doc('<answer><rejected vm="a" reason="&lt;&#x263A;&#9786;&quot;&amp;&apos;"/></answer>')}`;
  const parsed = parseNrdl(xml);
  expect(parsed.ok && parsed.doc.body).toEqual({
    kind: "answer",
    armed: [],
    rejected: [{ vm: "a", reason: "<☺☺\"&'" }],
  });
});

test("parseNrdlOrThrow throws 400 invalid NRDL with one detail per violation", () => {
  expect(parseNrdlOrThrow(offer(A)).id).toBe("mig-1");
  let caught: unknown;
  try {
    parseNrdlOrThrow(offer(vm("a", 'role="x" cpus="0"')));
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(TeleportError);
  expect(caught).toMatchObject({
    status: 400,
    reason: "invalid NRDL",
    details: [
      '/nrdl/offer/vm[1]/@role: expected one of router, switch, firewall, nat, server, storage, other, got "x"',
      '/nrdl/offer/vm[1]/@cpus: expected a positive integer, got "0"',
    ],
  });
});

describe("documents built in code", () => {
  const broken = (mutate: (d: NrdlDocument<Offer>) => void): NrdlDocument<Offer> => {
    const d = structuredClone(exampleOffer("exp2"));
    mutate(d);
    return d;
  };

  test("validateNrdl applies the same rules to the model, with wire paths", () => {
    const d = broken((x) => {
      (x.body.vms[1] as { role: string }).role = "king";
      x.body.vms[0].memoryMib = 1.5;
      x.body.vms[0].dependsOn = ["video"];
    });
    expect(validateNrdl(d).map((v) => `${v.path}: ${v.message}`)).toEqual([
      '/nrdl/offer/vm[1]/@memory-mib: expected a positive integer, got "1.5"',
      '/nrdl/offer/vm[2]/@role: expected one of router, switch, firewall, nat, server, storage, other, got "king"',
      "/nrdl/offer/vm[1]: dependency cycle router1 -> video -> router1",
    ]);
  });

  test("buildNrdl refuses an invalid document", () => {
    expect(() => buildNrdl(broken((x) => (x.body.vms[0].name = "a b")))).toThrow(
      "500 refusing to build invalid NRDL: /nrdl/offer/vm[1]/@name: expected a name matching " +
        '[A-Za-z0-9][A-Za-z0-9._-]{0,63}, got "a b"; /nrdl/offer/vm[2]/depends-on[1]/@vm: expected ' +
        'the name of a VM in this offer, got "router1"',
    );
  });

  test("buildNrdl escapes text so that it reads back unchanged", () => {
    const reason = `a & b < c > d " e ' f ☺ 😀`;
    const xml = buildNrdl({
      version: 1,
      id: "m",
      body: { kind: "answer", armed: [], rejected: [{ vm: "a", reason }] },
    });
    expect(xml).toContain('reason="a &amp; b &lt; c &gt; d &quot; e \' f ☺ 😀"');
    const parsed = parseNrdl(xml);
    expect(parsed.ok && parsed.doc.body).toEqual({ kind: "answer", armed: [], rejected: [{ vm: "a", reason }] });
  });
});
