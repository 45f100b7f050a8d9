import fc from "fast-check";
import { buildNrdl, exampleOffer, parseNrdl, EXAMPLES, type NrdlDocument } from "../../nrdl";
import { BODIES, documentOf } from "./arbitraries";

function parsed(xml: string): NrdlDocument {
  const result = parseNrdl(xml);
  if (!result.ok)
    throw new Error(`rejected:\n${result.violations.map((v) => `${v.path}: ${v.message}`).join("\n")}\n${xml}`);
  return result.doc;
}

describe.each(Object.entries(BODIES))("NRDL %s documents", (_kind, body) => {
  test("parse(build(x)) deep-equals x", () => {
    fc.assert(
      fc.property(documentOf(body), (doc) => expect(parsed(buildNrdl(doc))).toStrictEqual(doc)),
      { numRuns: 300 },
    );
  });

  test("build is deterministic and canonical: same document, same bytes, also after a round trip", () => {
    fc.assert(
      fc.property(documentOf(body), (doc) => {
        const xml = buildNrdl(doc);
        expect(buildNrdl(structuredClone(doc))).toBe(xml);
        expect(buildNrdl(parsed(xml))).toBe(xml);
      }),
      { numRuns: 100 },
    );
  });
});

test.each(EXAMPLES)("example %s builds to a valid offer that round-trips", (name) => {
  const doc = exampleOffer(name);
  expect(parsed(buildNrdl(doc))).toStrictEqual(doc);
});

test("examples name the thesis' VMs, network functions first", () => {
  const names = (n: (typeof EXAMPLES)[number]) => exampleOffer(n).body.vms.map((vm) => `${vm.name}:${vm.role}`);
  expect(names("exp1")).toEqual(["router1:router", "router2:router"]);
  expect(names("exp2")).toEqual(["router1:router", "video:server"]);
  expect(names("exp3")).toEqual(["firewall:firewall", "router-switch:router", "storage:storage", "web:server"]);
  expect(exampleOffer("exp2").body.vms[1].dependsOn).toEqual(["router1"]);
  for (const vm of exampleOffer("exp3").body.vms.slice(2)) expect(vm.dependsOn).toEqual(["firewall", "router-switch"]);
});
