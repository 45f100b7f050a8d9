/**
 * NRDL 2's convergence policy (`<policy convergence="none|auto-converge|postcopy">`): read in a v2
 * offer, refused in a v1 one, absent means "none" and keeps a document at version 1.
 */
import { buildNrdl, minimumVersion, offerDocument, parseNrdl, type Offer } from "../../nrdl";
import { offer, violationsOf, vm } from "./helpers";

const V2 = 'xmlns="urn:sip-teleport:nrdl:2" version="2" id="mig-1"';
const v2offer = (policy: string) => offer(vm("a"), policy).replace(/<nrdl [^>]*>/, `<nrdl ${V2}>`);

test.each(["none", "auto-converge", "postcopy"])("a v2 offer reads convergence=%s", (c) => {
  const parsed = parseNrdl(v2offer(`<policy convergence="${c}"/>`));
  expect(parsed.ok && (parsed.doc.body as Offer).policy.convergence).toBe(c);
});

test("convergence in a v1 offer needs version 2; an unknown value is named", () => {
  expect(violationsOf(offer(vm("a"), '<policy convergence="postcopy"/>'))).toEqual([
    "/nrdl/offer/policy/@convergence: attribute convergence needs NRDL version 2 or later; this document is version 1",
  ]);
  expect(violationsOf(v2offer('<policy convergence="throttle"/>'))).toEqual([
    '/nrdl/offer/policy/@convergence: expected one of none, auto-converge, postcopy, got "throttle"',
  ]);
});

test("a v1 offer reads convergence none; only a policy other than none needs version 2", () => {
  const parsed = parseNrdl(offer(vm("a")));
  expect(parsed.ok && (parsed.doc.body as Offer).policy.convergence).toBe("none");
  const input = { id: "mig-1", sourceUri: "sip:dc1@10.0.0.1", destinationUri: "sip:dc2@10.0.0.2" };
  const vms = [{ name: "a", memoryMib: 64 }];
  expect(offerDocument({ ...input, vms, policy: { convergence: "none" } }).version).toBe(1);
  const post = offerDocument({ ...input, vms, policy: { convergence: "postcopy" } });
  expect(post.version).toBe(2);
  expect(minimumVersion(post.body)).toBe(2);
});

describe("post-copy recovery (<recover> INFO, <recovery> in its 200 OK) and the group downtime", () => {
  const doc = (version: number, body: string) =>
    `<nrdl xmlns="urn:sip-teleport:nrdl:${version}" version="${version}" id="mig-1">${body}</nrdl>`;
  const recovery = '<recovery vm="video" uri="tcp:10.0.0.2:49160" secret="Qd8rT1mZ4xW7nB2vK5sL"/>';

  test("v2 reads both, and builds them back byte for byte", () => {
    for (const body of ['<recover vm="video"/>', recovery]) {
      const parsed = parseNrdl(doc(2, body));
      expect(parsed.ok).toBe(true);
      if (!parsed.ok) continue;
      expect(minimumVersion(parsed.doc.body)).toBe(2);
      expect(buildNrdl(parsed.doc)).toContain(body);
    }
    const parsed = parseNrdl(doc(2, recovery));
    expect(parsed.ok && parsed.doc.body).toEqual({
      kind: "recovery",
      vm: "video",
      uri: "tcp:10.0.0.2:49160",
      secret: "Qd8rT1mZ4xW7nB2vK5sL",
    });
  });

  test("v1 refuses them; a recovery needs a listener URI and a real secret; one body only", () => {
    expect(violationsOf(doc(1, '<recover vm="video"/>'))[0]).toBe(
      "/nrdl/recover: element <recover> needs NRDL version 2 or later; this document is version 1",
    );
    expect(violationsOf(doc(2, '<recovery vm="video" uri="nbd://h:1/x" secret="short"/>'))).toEqual([
      "/nrdl/recovery/@uri: expected a migration URI tcp:HOST:PORT (HOST an IPv4 address, [IPv6] or host name; " +
        'PORT 1-65535), got "nbd://h:1/x"',
      '/nrdl/recovery/@secret: expected a secret of 16 to 128 characters from [A-Za-z0-9_-], got "short"',
    ]);
    expect(violationsOf(doc(2, '<recover vm="a"/><recover vm="b"/>'))[0]).toMatch(/^\/nrdl: expected one body/);
  });

  test("a v2 report carries group-downtime-ms, a v1 report may not", () => {
    const report = (v: number) =>
      doc(
        v,
        '<report outcome="completed" group-downtime-ms="87"><result vm="a" state="completed" host="dc2"/></report>',
      );
    const parsed = parseNrdl(report(2));
    expect(parsed.ok && parsed.doc.body).toMatchObject({ kind: "report", groupDowntimeMs: 87 });
    expect(violationsOf(report(1))).toEqual([
      "/nrdl/report/@group-downtime-ms: attribute group-downtime-ms needs NRDL version 2 or later; " +
        "this document is version 1",
    ]);
  });
});
