/**
 * NRDL text -> NrdlDocument, or every violation at once. Order of defence: hostile-input guard
 * (guard.ts) before any parser runs; well-formedness (fast-xml-parser's validator); structure
 * (elements, attributes, text) here; semantics (validate.ts) on the resulting model.
 */
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { TeleportError } from "./errors";
import { guardHostileInput } from "./guard";
import { ORDERED_XML_OPTIONS } from "./xml-guard";
import {
  ATTRS,
  DEPENDS_ON_ATTR,
  elementSince,
  ROOT_ATTRS,
  URI_ATTR,
  shown,
  speaks,
  tooNew,
  type AttrSpec,
  type AttrValue,
} from "./schema";
import {
  NRDL_VERSION,
  SUPPORTED_VERSIONS,
  nrdlNamespace,
  type NrdlBody,
  type NrdlDocument,
  type Offer,
  type Policy,
  type Violation,
} from "./types";
import { formatViolation, validateNrdl } from "./validate";
import { unescapeAttr } from "./xmltext";

const ONE_BODIES =
  "<offer>, <answer>, <report>, <preview>, <capacity>, <recover>, <recovery>, <switchover>, <abort>, " +
  "<decision> or <decision-query>";
/** Bodies that are one element with attributes only, each with its attribute table. */
const LEAF_BODIES = ["capacity", "recover", "recovery", "switchover", "abort", "decision", "decision-query"] as const;

export type ParseResult = { ok: true; doc: NrdlDocument } | { ok: false; violations: Violation[] };

/** An element as parse.ts sees it: raw attributes, element children, its violation path. */
interface XNode {
  name: string;
  path: string;
  attrs: Record<string, string>;
  children: XNode[];
}

/** fast-xml-parser's preserveOrder shape: { tag: children, ":@": attributes } or { "#text": ... }. */
type OrderedEntry = Record<string, unknown>;

/** Elements that repeat get an XPath index in paths (vm[2]); singletons do not. */
const REPEATABLE = new Set(["vm", "depends-on", "disk", "armed", "export", "rejected", "status", "result"]);

const xmlParser = new XMLParser({ ...ORDERED_XML_OPTIONS, cdataPropName: "#cdata" });

class Context {
  readonly violations: Violation[] = [];
  /** Paths of elements found missing: model-level complaints below them would only repeat it. */
  readonly absent: string[] = [];
  /** The document's version: which vocabulary it may use (the newest when its own is unknown). */
  version = NRDL_VERSION;
  add(path: string, message: string): void {
    this.violations.push({ path, message });
  }
}

export function parseNrdl(xml: string): ParseResult {
  const hostile = guardHostileInput(xml);
  if (hostile.length > 0) return { ok: false, violations: hostile };
  const wellFormed = XMLValidator.validate(xml);
  if (wellFormed !== true) {
    const { line, col, msg } = wellFormed.err;
    return {
      ok: false,
      violations: [{ path: "/", message: `malformed XML at line ${line}${col ? `, column ${col}` : ""}: ${msg}` }],
    };
  }
  let tree: OrderedEntry[];
  try {
    tree = xmlParser.parse(xml) as OrderedEntry[];
  } catch (err) {
    // The validator and the parser disagree on a few malformations; never let one escape as a throw.
    return {
      ok: false,
      violations: [{ path: "/", message: `malformed XML: ${err instanceof Error ? err.message : String(err)}` }],
    };
  }
  const ctx = new Context();
  const roots = toNodes(tree, "", ctx);
  if (roots.length !== 1 || roots[0].name !== "nrdl") {
    const found = roots.map((r) => `<${r.name}>`).join(", ") || "none";
    return {
      ok: false,
      violations: [
        {
          path: "/",
          message: `expected one root element <nrdl xmlns="urn:sip-teleport:nrdl:VERSION">, found ${found}`,
        },
      ],
    };
  }
  const doc = readDocument(roots[0], ctx);
  const reported = new Set(ctx.violations.map((v) => v.path));
  const semantic = validateNrdl(doc).filter(
    (v) => !reported.has(v.path) && !ctx.absent.some((a) => v.path.startsWith(`${a}/`)),
  );
  const violations = [...ctx.violations, ...semantic];
  return violations.length === 0 ? { ok: true, doc } : { ok: false, violations };
}

/** For callers that answer a SIP request: 400 "invalid NRDL" with one detail line per violation. */
export function parseNrdlOrThrow(xml: string): NrdlDocument {
  const result = parseNrdl(xml);
  if (!result.ok) throw new TeleportError(400, "invalid NRDL", result.violations.map(formatViolation));
  return result.doc;
}

function toNodes(entries: OrderedEntry[], parentPath: string, ctx: Context): XNode[] {
  const counts = new Map<string, number>();
  const nodes: XNode[] = [];
  for (const entry of entries) {
    const name = Object.keys(entry).find((k) => k !== ":@");
    if (name === undefined || name === "#comment") continue;
    if (name === "#text") {
      const text = String(entry[name]);
      if (text.trim() !== "") ctx.add(parentPath || "/", `text content is not allowed here, got ${shown(text.trim())}`);
      continue;
    }
    const n = (counts.get(name) ?? 0) + 1;
    counts.set(name, n);
    const path = `${parentPath}/${name}${REPEATABLE.has(name) ? `[${n}]` : ""}`;
    const attrs = (entry[":@"] ?? {}) as Record<string, string>;
    nodes.push({ name, path, attrs, children: toNodes(entry[name] as OrderedEntry[], path, ctx) });
  }
  return nodes;
}

/** Decoded attributes by model key; defaults filled in; invalid or missing ones left out. */
function readAttrs(node: XNode, specs: readonly AttrSpec[], ctx: Context): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const [name, raw] of Object.entries(node.attrs)) {
    const spec = specs.find((s) => s.attr === name);
    const path = `${node.path}/@${name}`;
    if (spec === undefined) {
      const takes = specs.length > 0 ? `takes ${specs.map((s) => s.attr).join(", ")}` : "takes no attributes";
      ctx.add(path, `unexpected attribute; <${node.name}> ${takes}`);
      continue;
    }
    if (!speaks(ctx.version, spec.since)) {
      ctx.add(path, tooNew(`attribute ${name}`, spec.since, ctx.version));
      continue;
    }
    const text = unescapeAttr(raw);
    const value = "value" in text ? spec.codec.decode(text.value) : undefined;
    if (value !== undefined) out[spec.key] = value;
    else ctx.add(path, `expected ${spec.codec.expected}, got ${"value" in text ? shown(text.value) : text.error}`);
  }
  for (const spec of specs) {
    if (typeof spec.use === "object" && !(spec.attr in node.attrs)) out[spec.key] = spec.use.default;
  }
  return out;
}

type Cardinality = "one" | "optional" | "many";

/** Children grouped by name; unknown children, missing and repeated singletons reported. */
function childrenOf(node: XNode, allowed: Record<string, Cardinality>, ctx: Context): Map<string, XNode[]> {
  const groups = new Map<string, XNode[]>(Object.keys(allowed).map((name) => [name, []]));
  const names = Object.keys(allowed).map((n) => `<${n}>`);
  for (const child of node.children) {
    const group = groups.get(child.name);
    const since = elementSince(child.name);
    if (group && !speaks(ctx.version, since))
      ctx.add(child.path, tooNew(`element <${child.name}>`, since, ctx.version));
    else if (group) group.push(child);
    else
      ctx.add(
        child.path,
        `unexpected element <${child.name}>; <${node.name}> ` +
          `${names.length ? `contains ${names.join(", ")}` : "has no child elements"}`,
      );
  }
  for (const [name, cardinality] of Object.entries(allowed)) {
    const count = groups.get(name)?.length ?? 0;
    if (cardinality === "one" && count === 0) {
      ctx.add(`${node.path}/${name}`, "required element missing");
      ctx.absent.push(`${node.path}/${name}`);
    }
    if (cardinality !== "many" && count > 1) ctx.add(`${node.path}/${name}`, `expected one <${name}>, found ${count}`);
  }
  return groups;
}

function leaf(node: XNode, specs: readonly AttrSpec[], ctx: Context): Record<string, AttrValue> {
  childrenOf(node, {}, ctx);
  return readAttrs(node, specs, ctx);
}

function readDocument(root: XNode, ctx: Context): NrdlDocument {
  const { xmlns, ...attrs } = root.attrs;
  const head = readAttrs({ ...root, attrs }, ROOT_ATTRS, ctx);
  // An unknown version is reported by validate.ts; read it with the newest vocabulary meanwhile.
  const known = typeof head.version === "number" && SUPPORTED_VERSIONS.includes(head.version);
  if (known) ctx.version = head.version as number;
  const namespaceOk = known
    ? xmlns === nrdlNamespace(ctx.version)
    : /^urn:sip-teleport:nrdl:[1-9][0-9]*$/.test(xmlns ?? "");
  if (!namespaceOk) {
    const expected = known ? JSON.stringify(nrdlNamespace(ctx.version)) : '"urn:sip-teleport:nrdl:" and the version';
    ctx.add("/nrdl/@xmlns", `expected the namespace ${expected}, got ${xmlns === undefined ? "none" : shown(xmlns)}`);
  }
  const groups = childrenOf(
    root,
    {
      offer: "many",
      answer: "many",
      report: "many",
      status: "many",
      preview: "many",
      capacity: "many",
      ...Object.fromEntries(LEAF_BODIES.map((name) => [name, "many" as const])),
    },
    ctx,
  );

  const present = [...groups.values()].flat();
  const kinds = new Set(present.map((n) => n.name));
  let body: NrdlBody | undefined;
  if (kinds.size !== 1 || (!kinds.has("status") && present.length > 1)) {
    const found = present.map((n) => `<${n.name}>`).join(", ") || "none";
    ctx.add("/nrdl", `expected one body: one ${ONE_BODIES}, or one or more <status>; found ${found}`);
  } else if (kinds.has("offer")) body = readOffer(present[0], ctx);
  else if (kinds.has("answer")) body = readAnswer(present[0], ctx);
  else if (kinds.has("report")) body = readReport(present[0], ctx);
  else if (kinds.has("preview")) body = readPreview(present[0], ctx);
  else if (LEAF_BODIES.some((name) => kinds.has(name))) {
    const name = LEAF_BODIES.find((n) => kinds.has(n)) as (typeof LEAF_BODIES)[number];
    body = { kind: name, ...leaf(present[0], ATTRS[name], ctx) } as unknown as NrdlBody;
  } else body = { kind: "status", statuses: present.map((n) => leaf(n, ATTRS.status, ctx)) } as unknown as NrdlBody;
  return { ...head, body } as unknown as NrdlDocument;
}

function readOffer(node: XNode, ctx: Context): Offer {
  readAttrs(node, [], ctx);
  const groups = childrenOf(node, { source: "one", destination: "one", policy: "optional", vm: "many" }, ctx);
  const uriOf = (name: string): AttrValue | undefined => {
    const el = groups.get(name)?.[0];
    return el === undefined ? undefined : leaf(el, [URI_ATTR], ctx).uri;
  };
  const vms = (groups.get("vm") ?? []).map((vm) => {
    const children = childrenOf(vm, { "depends-on": "many", disk: "many" }, ctx);
    return {
      ...readAttrs(vm, ATTRS.vm, ctx),
      dependsOn: (children.get("depends-on") ?? []).map((d) => leaf(d, [DEPENDS_ON_ATTR], ctx).vm),
      disks: (children.get("disk") ?? []).map((d) => leaf(d, ATTRS.disk, ctx)),
    };
  });
  const policyNode = groups.get("policy")?.[0] ?? {
    name: "policy",
    path: "/nrdl/offer/policy",
    attrs: {},
    children: [],
  };
  const policy = leaf(policyNode, ATTRS.policy, ctx) as Partial<Policy>;
  // max-parallel defaults to 1 for sequential and to "all at once" otherwise.
  if (!("max-parallel" in policyNode.attrs))
    policy.maxParallel = policy.strategy === "sequential" ? 1 : Math.max(vms.length, 1);
  return {
    kind: "offer",
    sourceUri: uriOf("source"),
    destinationUri: uriOf("destination"),
    policy,
    vms,
  } as unknown as Offer;
}

function readAnswer(node: XNode, ctx: Context): NrdlBody {
  const head = readAttrs(node, ATTRS.answer, ctx);
  const groups = childrenOf(node, { armed: "many", rejected: "many" }, ctx);
  return {
    kind: "answer",
    ...head,
    armed: (groups.get("armed") ?? []).map((n) => ({
      ...readAttrs(n, ATTRS.armed, ctx),
      exports: (childrenOf(n, { export: "many" }, ctx).get("export") ?? []).map((e) => leaf(e, ATTRS.export, ctx)),
    })),
    rejected: (groups.get("rejected") ?? []).map((n) => leaf(n, ATTRS.rejected, ctx)),
  } as unknown as NrdlBody;
}

function readPreview(node: XNode, ctx: Context): NrdlBody {
  readAttrs(node, [], ctx);
  const groups = childrenOf(node, { accepted: "many", rejected: "many" }, ctx);
  return {
    kind: "preview",
    accepted: (groups.get("accepted") ?? []).map((n) => leaf(n, ATTRS.accepted, ctx)),
    rejected: (groups.get("rejected") ?? []).map((n) => leaf(n, ATTRS.rejected, ctx)),
  } as unknown as NrdlBody;
}

function readReport(node: XNode, ctx: Context): NrdlBody {
  const head = readAttrs(node, ATTRS.report, ctx);
  const results = childrenOf(node, { result: "many" }, ctx).get("result") ?? [];
  return { kind: "report", ...head, results: results.map((n) => leaf(n, ATTRS.result, ctx)) } as unknown as NrdlBody;
}
