/**
 * libvirt's XML (domain definitions, migration cookies) read as documents: the shared hostile-input
 * guard first (no DOCTYPE, no entities, bounded size and depth), then fast-xml-parser, then a tree
 * of our own with attributes in Maps and references resolved. Comments are dropped, quotes of either
 * style are the same, and nothing is picked out of the text by pattern.
 */
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { guardXml, ORDERED_XML_OPTIONS, resolveReferences, type XmlGuardRules } from "../../nrdl/xml-guard";

export interface XmlElement {
  name: string;
  attrs: ReadonlyMap<string, string>;
  /** The element's own text, trimmed (libvirt's vocabulary has no mixed content). */
  text: string;
  children: XmlElement[];
}

export type XmlResult = { ok: true; root: XmlElement } | { ok: false; why: string };

/** Far above any definition libvirt writes for a real VM (a few KiB; ~100 KiB with hundreds of disks). */
export const LIBVIRT_XML_MAX_BYTES = 1024 * 1024;

const RULES: XmlGuardRules = {
  documents: "libvirt XML documents here",
  maxBytes: LIBVIRT_XML_MAX_BYTES,
  // <metadata> may hold an application's own elements; libvirt's own vocabulary nests ~7 deep
  maxDepth: 32,
  depthHint: "libvirt's domain vocabulary nests far less",
  cdataHint: "libvirt never writes them",
  dtdHint: "libvirt XML has no DTD and no entities",
};

const parser = new XMLParser(ORDERED_XML_OPTIONS);

/** fast-xml-parser's preserveOrder shape: { tag: children, ":@": attributes } or { "#text": ... }. */
type Entry = Record<string, unknown>;

export function parseLibvirtXml(xml: string): XmlResult {
  const hostile = guardXml(xml, RULES);
  if (hostile.length) return { ok: false, why: hostile.map((v) => v.message).join("; ") };
  const wellFormed = XMLValidator.validate(xml);
  if (wellFormed !== true)
    return { ok: false, why: `malformed XML at line ${wellFormed.err.line}: ${wellFormed.err.msg}` };
  try {
    const roots = toElements(parser.parse(xml) as Entry[]);
    if (roots.length !== 1) return { ok: false, why: `${roots.length} root elements` };
    return { ok: true, root: roots[0] };
  } catch (err) {
    // the parser refuses names like __proto__ by throwing; so do unresolvable references
    return { ok: false, why: `malformed XML: ${(err as Error).message}` };
  }
}

function toElements(entries: Entry[]): XmlElement[] {
  const out: XmlElement[] = [];
  for (const entry of entries) {
    const name = Object.keys(entry).find((k) => k !== ":@");
    if (name === undefined || name === "#comment" || name === "#text") continue;
    const body = entry[name] as Entry[];
    const attrs = new Map<string, string>();
    for (const [k, raw] of Object.entries((entry[":@"] ?? {}) as Record<string, string>)) attrs.set(k, resolved(raw));
    const text = body
      .filter((e) => Object.keys(e).includes("#text"))
      .map((e) => String(e["#text"]))
      .join("");
    out.push({ name, attrs, text: resolved(text).trim(), children: toElements(body) });
  }
  return out;
}

function resolved(raw: string): string {
  const r = resolveReferences(raw);
  if ("error" in r) throw new Error(r.error);
  return r.value;
}

/** The first child called `name`, and how many there are. */
export function child(el: XmlElement | undefined, name: string): XmlElement | undefined {
  return el?.children.find((c) => c.name === name);
}

export function childrenNamed(el: XmlElement | undefined, name: string): XmlElement[] {
  return el?.children.filter((c) => c.name === name) ?? [];
}

/** One canonical text per element: attributes sorted, values quoted the same way, comments gone. */
export function canonical(el: XmlElement): string {
  const attrs = [...el.attrs.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => ` ${k}=${JSON.stringify(v)}`)
    .join("");
  const text = el.text ? JSON.stringify(el.text) : "";
  return `<${el.name}${attrs}>${text}${el.children.map(canonical).join("")}</${el.name}>`;
}
