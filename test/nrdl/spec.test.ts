/** The examples in nrdl/SPEC.md and in issue 2 are valid NRDL: the spec and the code agree. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { violationsOf } from "./helpers";

const spec = readFileSync(join(__dirname, "..", "..", "nrdl", "SPEC.md"), "utf8");
const examples = [...spec.matchAll(/```xml\n([\s\S]*?)```/g)]
  .map((m) => m[1].trim())
  .filter((xml) => !xml.includes(" BODY "))
  .map((xml) =>
    xml.startsWith("<nrdl") ? xml : `<nrdl xmlns="urn:sip-teleport:nrdl:1" version="1" id="mig-7f3a">${xml}</nrdl>`,
  );

test("SPEC.md has an example for every body kind", () => {
  const kinds =
    /<(offer|answer|preview|capacity|status|report|recover|recovery|switchover|abort|decision-query|decision)\b/;
  expect(examples.map((x) => kinds.exec(x)?.[1])).toEqual([
    "offer",
    "answer",
    "preview",
    "capacity",
    "status",
    "report",
    "recover",
    "recovery",
    "switchover",
    "abort",
    "decision",
    "decision-query",
    // stream reductions (5.7), group page dedup (5.8)
    "offer",
    "answer",
    "offer",
    "answer",
  ]);
});

test.each(examples.map((x, i) => [i + 1, x]))("SPEC.md example %i is valid", (_i, xml) => {
  expect(violationsOf(xml as string)).toEqual([]);
});

test("the document in issue 2 is valid, comments included", () => {
  const issueExample = `<nrdl xmlns="urn:sip-teleport:nrdl:1" version="1" id="mig-7f3a">
  <offer>                                     <!-- INVITE body: what to move and how -->
    <source uri="sip:dc1@10.10.10.66"/>
    <destination uri="sip:dc2@10.10.10.67"/>
    <policy strategy="sequential" max-parallel="1" bandwidth-mbps="0" downtime-limit-ms="300"
            timeout-s="600" on-error="abort"/>   <!-- strategy: sequential | parallel | switchover -->
    <vm name="router1" hypervisor="qemu" role="router" memory-mib="256" cpus="1"/>
    <vm name="video" hypervisor="qemu" role="server" memory-mib="512" cpus="1">
      <depends-on vm="router1"/>
    </vm>
  </offer>
</nrdl>`;
  expect(violationsOf(issueExample)).toEqual([]);
});
