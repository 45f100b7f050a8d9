/**
 * NRDL 2's convergence policy (`<policy convergence="none|auto-converge|postcopy">`): read in a v2
 * offer, refused in a v1 one, absent means "none" and keeps a document at version 1.
 */
import { minimumVersion, offerDocument, parseNrdl, type Offer } from "../../nrdl";
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
