/**
 * NrdlDocument -> NRDL text. Deterministic: fixed element order, attributes in the schema's order,
 * defaults written out, two-space indentation, LF line ends, one trailing newline. Refuses to write
 * an invalid document, so nothing this process sends can fail the peer's parser. Writes only the
 * vocabulary of the document's version (a newer attribute at its default is simply left out).
 */
import { ATTRS, DEPENDS_ON_ATTR, ROOT_ATTRS, URI_ATTR, speaks, type AttrSpec, type AttrValue } from "./schema";
import { nrdlNamespace, type NrdlBody, type NrdlDocument } from "./types";
import { assertValidNrdl } from "./validate";
import { escapeAttr } from "./xmltext";

export function buildNrdl(doc: NrdlDocument): string {
  assertValidNrdl(doc, 500, "refusing to build invalid NRDL");
  const attrs = attrsOf(doc.version);
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<nrdl xmlns="${nrdlNamespace(doc.version)}"${attrs(doc, ROOT_ATTRS)}>`,
    ...body(doc.body, attrs).map((line) => `  ${line}`),
    "</nrdl>",
  ];
  return `${lines.join("\n")}\n`;
}

type Attrs = (obj: object, specs: readonly AttrSpec[]) => string;

function attrsOf(version: number): Attrs {
  return (obj, specs) => {
    const values = obj as Record<string, AttrValue | undefined>;
    return specs
      .filter((s) => speaks(version, s.since) && values[s.key] !== undefined)
      .map((s) => ` ${s.attr}="${escapeAttr(s.codec.encode(values[s.key] as AttrValue))}"`)
      .join("");
  };
}

function element(name: string, attributes: string, children: string[] = []): string[] {
  if (children.length === 0) return [`<${name}${attributes}/>`];
  return [`<${name}${attributes}>`, ...children.map((line) => `  ${line}`), `</${name}>`];
}

function body(b: NrdlBody, attrs: Attrs): string[] {
  switch (b.kind) {
    case "offer":
      return element("offer", "", [
        ...element("source", attrs({ uri: b.sourceUri }, [URI_ATTR])),
        ...element("destination", attrs({ uri: b.destinationUri }, [URI_ATTR])),
        ...element("policy", attrs(b.policy, ATTRS.policy)),
        ...b.vms.flatMap((vm) =>
          element("vm", attrs(vm, ATTRS.vm), [
            ...vm.dependsOn.flatMap((d) => element("depends-on", attrs({ vm: d }, [DEPENDS_ON_ATTR]))),
            ...vm.disks.flatMap((d) => element("disk", attrs(d, ATTRS.disk))),
          ]),
        ),
      ]);
    case "answer":
      return element("answer", attrs(b, ATTRS.answer), [
        ...b.armed.flatMap((a) =>
          element(
            "armed",
            attrs(a, ATTRS.armed),
            a.exports.flatMap((e) => element("export", attrs(e, ATTRS.export))),
          ),
        ),
        ...b.rejected.flatMap((r) => element("rejected", attrs(r, ATTRS.rejected))),
      ]);
    case "preview":
      return element("preview", "", [
        ...b.accepted.flatMap((a) => element("accepted", attrs(a, ATTRS.accepted))),
        ...b.rejected.flatMap((r) => element("rejected", attrs(r, ATTRS.rejected))),
      ]);
    case "capacity":
    case "recover":
    case "recovery":
    case "switchover":
    case "abort":
    case "decision":
    case "decision-query":
      return element(b.kind, attrs(b, ATTRS[b.kind]));
    case "status":
      return b.statuses.flatMap((s) => element("status", attrs(s, ATTRS.status)));
    case "report":
      return element(
        "report",
        attrs(b, ATTRS.report),
        b.results.flatMap((r) => element("result", attrs(r, ATTRS.result))),
      );
  }
}
