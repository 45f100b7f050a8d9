/**
 * Semantic rules on an in-memory NRDL document: every attribute against its type (schema.ts),
 * names, duplicates, depends-on references, dependency cycles, strategy/max-parallel agreement.
 * Works on anything shaped roughly like a document (parse.ts hands it partial ones) and reports
 * every violation with the wire path it would have, e.g. /nrdl/offer/vm[2]/@memory-mib.
 */
import { TeleportError } from "./errors";
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
} from "./schema";
import {
  MULTIFD_METHODS,
  NRDL_VERSION,
  SUPPORTED_VERSIONS,
  type Answer,
  type CompressMethod,
  type Decision,
  type DecisionQuery,
  type GroupAbort,
  type SwitchoverNotice,
  type NrdlDocument,
  type Offer,
  type Preview,
  type RecoverRequest,
  type Recovery,
  type Report,
  type StatusReport,
  type Violation,
} from "./types";

export function formatViolation(v: Violation): string {
  return `${v.path}: ${v.message}`;
}

/** Violations found so far, and the version whose vocabulary the document may use. */
type Out = Violation[] & { version?: number };

/** Every violation of `doc`, in document order; empty when the document is valid. */
export function validateNrdl(doc: NrdlDocument): Violation[] {
  const out: Out = [];
  checkAttrs(doc, ROOT_ATTRS, "/nrdl", out);
  const known = SUPPORTED_VERSIONS.includes(doc.version);
  if (typeof doc.version === "number" && Number.isSafeInteger(doc.version) && !known) {
    out.push({
      path: "/nrdl/@version",
      message: `unsupported version ${doc.version}; this build speaks NRDL versions ${SUPPORTED_VERSIONS.join(", ")}`,
    });
  }
  out.version = known ? doc.version : NRDL_VERSION;
  const body = doc.body as Partial<NrdlDocument["body"]> | undefined;
  if (body?.kind === "offer") validateOffer(body as Offer, out);
  else if (body?.kind === "answer") validateAnswer(body as Answer, out);
  else if (body?.kind === "status") validateStatus(body as StatusReport, out);
  else if (body?.kind === "report") validateReport(body as Report, out);
  else if (body?.kind === "preview") validatePreview(body as Preview, out);
  else if (body?.kind === "capacity") checkAttrs(body, ATTRS.capacity, "/nrdl/capacity", out);
  else if (body?.kind !== undefined && V2_LEAVES.has(body.kind)) validateLeaf(body as V2Leaf, out);
  else
    out.push({
      path: "/nrdl",
      message:
        "expected a body: <offer>, <answer>, <report>, <preview>, <capacity>, <recover>, <recovery>, " +
        "<switchover>, <abort>, <decision>, <decision-query> or one or more <status>",
    });
  return out;
}

type V2Leaf = RecoverRequest | Recovery | SwitchoverNotice | GroupAbort | Decision | DecisionQuery;
const V2_LEAVES: ReadonlySet<string> = new Set([
  "recover",
  "recovery",
  "switchover",
  "abort",
  "decision",
  "decision-query",
]);

/** The version-2 bodies that are one element with attributes (recovery 5.5, group commit 5.6). */
function validateLeaf(body: V2Leaf, out: Out): void {
  const path = `/nrdl/${body.kind}`;
  const since = elementSince(body.kind);
  const version = out.version ?? NRDL_VERSION;
  if (!speaks(version, since)) out.push({ path, message: tooNew(`element <${body.kind}>`, since, version) });
  else checkAttrs(body, ATTRS[body.kind], path, out);
}

/** Throws TeleportError(400, "invalid NRDL", one line per violation) unless `doc` is valid. */
export function assertValidNrdl(doc: NrdlDocument, status = 400, reason = "invalid NRDL"): void {
  const violations = validateNrdl(doc);
  if (violations.length > 0) throw new TeleportError(status, reason, violations.map(formatViolation));
}

function checkAttrs(obj: object, specs: readonly AttrSpec[], path: string, out: Out): void {
  const values = obj as Record<string, unknown>;
  const version = out.version ?? NRDL_VERSION;
  for (const spec of specs) {
    const value = values[spec.key];
    // Newer vocabulary: absent (or at its default, which an older version implies) in older documents.
    if (!speaks(version, spec.since)) {
      const implied = typeof spec.use === "object" && value === spec.use.default;
      if (value !== undefined && !implied)
        out.push({ path: `${path}/@${spec.attr}`, message: tooNew(`attribute ${spec.attr}`, spec.since, version) });
      continue;
    }
    if (value === undefined) {
      // a defaulted attribute newer than v1 may be left out in memory too: its default applies
      const laterDefault = spec.since > 1 && typeof spec.use === "object";
      if (spec.use !== "optional" && !laterDefault) {
        out.push({
          path: `${path}/@${spec.attr}`,
          message: `required attribute missing; expected ${spec.codec.expected}`,
        });
      }
    } else if (!spec.codec.accepts(value)) {
      out.push({ path: `${path}/@${spec.attr}`, message: `expected ${spec.codec.expected}, got ${shown(value)}` });
    }
  }
}

/** Elements of a newer version than the document's: one violation for the first. */
function checkElementVersion(items: unknown, name: string, path: string, out: Out): boolean {
  const since = elementSince(name);
  const version = out.version ?? NRDL_VERSION;
  if (!Array.isArray(items) || items.length === 0 || speaks(version, since)) return true;
  out.push({ path: `${path}/${name}[1]`, message: tooNew(`element <${name}>`, since, version) });
  return false;
}

/** Items in a list the wire writes as repeated elements, each with its path. */
function indexed<T>(items: unknown, path: string): Array<{ item: T; path: string }> {
  return Array.isArray(items) ? items.map((item: T, i) => ({ item, path: `${path}[${i + 1}]` })) : [];
}

/** A VM may appear only once per list; later occurrences are violations naming the first. */
function checkUnique(entries: Array<{ name: unknown; path: string }>, what: string, out: Out): void {
  const first = new Map<unknown, string>();
  for (const { name, path } of entries) {
    if (typeof name !== "string") continue;
    const earlier = first.get(name);
    if (earlier === undefined) first.set(name, path);
    else out.push({ path, message: `duplicate ${what} ${JSON.stringify(name)} (already at ${earlier})` });
  }
}

function validateOffer(offer: Offer, out: Out): void {
  checkAttrs({ uri: offer.sourceUri }, [URI_ATTR], "/nrdl/offer/source", out);
  checkAttrs({ uri: offer.destinationUri }, [URI_ATTR], "/nrdl/offer/destination", out);
  const policy = offer.policy as Offer["policy"] | undefined;
  if (policy === undefined) out.push({ path: "/nrdl/offer/policy", message: "required element missing" });
  else {
    checkAttrs(policy, ATTRS.policy, "/nrdl/offer/policy", out);
    if (policy.strategy === "sequential" && policy.maxParallel !== undefined && policy.maxParallel !== 1) {
      out.push({
        path: "/nrdl/offer/policy/@max-parallel",
        message: `expected 1 when strategy is sequential, got ${shown(policy.maxParallel)}`,
      });
    }
    if (typeof policy.compress === "string") {
      const words = policy.compress.split(" ");
      if (new Set(words).size !== words.length)
        out.push({ path: "/nrdl/offer/policy/@compress", message: `expected each method once, got ${shown(words)}` });
    }
    if (policy.dedupLink !== undefined && policy.dedup !== "on")
      out.push({ path: "/nrdl/offer/policy/@dedup-link", message: 'allowed only with dedup="on"' });
  }
  const vms = indexed<Offer["vms"][number]>(offer.vms, "/nrdl/offer/vm");
  if (vms.length === 0)
    out.push({ path: "/nrdl/offer/vm[1]", message: "required element missing; an offer names at least one <vm>" });
  for (const { item: vm, path } of vms) {
    checkAttrs(vm, ATTRS.vm, path, out);
    const deps = indexed<string>(vm.dependsOn, `${path}/depends-on`);
    for (const dep of deps) checkAttrs({ vm: dep.item }, [DEPENDS_ON_ATTR], dep.path, out);
    checkUnique(
      deps.map((d) => ({ name: d.item, path: `${d.path}/@vm` })),
      "depends-on",
      out,
    );
    if (checkElementVersion(vm.disks, "disk", path, out)) checkDisks(vm.disks, path, out);
  }
  checkUnique(
    vms.map((v) => ({ name: v.item.name, path: `${v.path}/@name` })),
    "VM name",
    out,
  );
  checkDependencies(vms, out);
}

function checkDisks(list: Offer["vms"][number]["disks"], vmPath: string, out: Out): void {
  const disks = indexed<Offer["vms"][number]["disks"][number]>(list, `${vmPath}/disk`);
  for (const { item: disk, path } of disks) {
    checkAttrs(disk, ATTRS.disk, path, out);
    // copy-top copies a qcow2 overlay onto a base image both hosts hold: the base must be comparable
    if (disk.mode === "copy-top" && disk.format !== undefined && disk.format !== "qcow2")
      out.push({ path: `${path}/@format`, message: `expected qcow2 when mode is copy-top, got ${shown(disk.format)}` });
    if (disk.mode === "copy-top" && disk.backingBytes === undefined)
      out.push({
        path: `${path}/@backing-bytes`,
        message: "required when mode is copy-top; expected a positive integer",
      });
    if (disk.mode !== undefined && disk.mode !== "copy-top" && disk.backingBytes !== undefined)
      out.push({
        path: `${path}/@backing-bytes`,
        message: `only a copy-top disk has a backing image, got mode ${shown(disk.mode)}`,
      });
  }
  checkUnique(
    disks.map((d) => ({ name: d.item.target, path: `${d.path}/@target` })),
    "disk target",
    out,
  );
}

function checkDependencies(vms: Array<{ item: Offer["vms"][number]; path: string }>, out: Out): void {
  const index = new Map<string, number>();
  vms.forEach(({ item }, i) => {
    if (typeof item.name === "string" && !index.has(item.name)) index.set(item.name, i);
  });
  const edges = vms.map(({ item, path }) =>
    indexed<string>(item.dependsOn, `${path}/depends-on`).flatMap(({ item: dep, path: depPath }) => {
      const target = index.get(dep);
      if (target === undefined && typeof dep === "string") {
        out.push({ path: `${depPath}/@vm`, message: `expected the name of a VM in this offer, got ${shown(dep)}` });
      }
      return target === undefined ? [] : [target];
    }),
  );
  for (const cycle of findCycles(edges)) {
    const names = [...cycle, cycle[0]].map((i) => vms[i].item.name).join(" -> ");
    out.push({ path: vms[cycle[0]].path, message: `dependency cycle ${names}` });
  }
}

/** Each cycle once, as node indexes starting at its earliest node (depth-first, document order). */
function findCycles(edges: number[][]): number[][] {
  const state = edges.map(() => "new" as "new" | "open" | "done");
  const stack: number[] = [];
  const seen = new Set<string>();
  const cycles: number[][] = [];
  const visit = (node: number): void => {
    state[node] = "open";
    stack.push(node);
    for (const next of edges[node]) {
      if (state[next] === "new") visit(next);
      else if (state[next] === "open") {
        const cycle = stack.slice(stack.indexOf(next));
        const start = cycle.indexOf(Math.min(...cycle));
        const canonical = [...cycle.slice(start), ...cycle.slice(0, start)];
        if (!seen.has(canonical.join())) {
          seen.add(canonical.join());
          cycles.push(canonical);
        }
      }
    }
    stack.pop();
    state[node] = "done";
  };
  edges.forEach((_e, node) => state[node] === "new" && visit(node));
  return cycles;
}

function validateAnswer(answer: Answer, out: Out): void {
  checkAttrs(answer, ATTRS.answer, "/nrdl/answer", out);
  const armed = indexed<Answer["armed"][number]>(answer.armed, "/nrdl/answer/armed");
  const rejected = indexed<Answer["rejected"][number]>(answer.rejected, "/nrdl/answer/rejected");
  if (armed.length + rejected.length === 0) {
    out.push({ path: "/nrdl/answer", message: "expected at least one <armed> or <rejected>" });
  }
  for (const a of armed) {
    checkAttrs(a.item, ATTRS.armed, a.path, out);
    checkChannels(a.item.compress, a.item.channels, a.path, out);
    // the dedup relays never see multifd's channels (SPEC.md 5.8)
    if (a.item.dedup === "on" && typeof a.item.compress === "string" && MULTIFD_METHODS.has(a.item.compress))
      out.push({ path: `${a.path}/@dedup`, message: `cannot go with compress ${a.item.compress} (multifd)` });
    if (!checkElementVersion(a.item.exports, "export", a.path, out)) continue;
    const exports = indexed<Answer["armed"][number]["exports"][number]>(a.item.exports, `${a.path}/export`);
    for (const e of exports) checkAttrs(e.item, ATTRS.export, e.path, out);
    checkUnique(
      exports.map((e) => ({ name: e.item.disk, path: `${e.path}/@disk` })),
      "disk",
      out,
    );
  }
  for (const r of rejected) checkAttrs(r.item, ATTRS.rejected, r.path, out);
  checkUnique(
    [...armed, ...rejected].map((e) => ({ name: e.item.vm, path: `${e.path}/@vm` })),
    "VM",
    out,
  );
  // the source sizes its half of the dialog's index by the destination's cap: with dedup, and only then
  const dedup = armed.some((a) => a.item.dedup === "on");
  if (dedup && answer.dedupPages === undefined)
    out.push({ path: "/nrdl/answer/@dedup-pages", message: 'required when an <armed> says dedup="on"' });
  if (!dedup && answer.dedupPages !== undefined)
    out.push({ path: "/nrdl/answer/@dedup-pages", message: 'allowed only when an <armed> says dedup="on"' });
  if (!dedup && answer.dedupLink !== undefined)
    out.push({ path: "/nrdl/answer/@dedup-link", message: 'allowed only when an <armed> says dedup="on"' });
}

/** Multifd methods name their channel count (the listener takes that many connections); the others none. */
function checkChannels(compress: unknown, channels: unknown, path: string, out: Out): void {
  const multifd = typeof compress === "string" && MULTIFD_METHODS.has(compress as CompressMethod);
  if (multifd && channels === undefined)
    out.push({ path: `${path}/@channels`, message: `required when compress is ${compress}; expected 1 to 16` });
  if (!multifd && channels !== undefined)
    out.push({ path: `${path}/@channels`, message: "allowed only with compress zstd or zlib (multifd)" });
}

function validatePreview(preview: Preview, out: Out): void {
  const accepted = indexed<Preview["accepted"][number]>(preview.accepted, "/nrdl/preview/accepted");
  const rejected = indexed<Preview["rejected"][number]>(preview.rejected, "/nrdl/preview/rejected");
  if (accepted.length + rejected.length === 0)
    out.push({ path: "/nrdl/preview", message: "expected at least one <accepted> or <rejected>" });
  for (const a of accepted) checkAttrs(a.item, ATTRS.accepted, a.path, out);
  for (const r of rejected) checkAttrs(r.item, ATTRS.rejected, r.path, out);
  checkUnique(
    [...accepted, ...rejected].map((e) => ({ name: e.item.vm, path: `${e.path}/@vm` })),
    "VM",
    out,
  );
}

function validateStatus(body: StatusReport, out: Out): void {
  const statuses = indexed<StatusReport["statuses"][number]>(body.statuses, "/nrdl/status");
  if (statuses.length === 0)
    out.push({ path: "/nrdl/status[1]", message: "required element missing; a status body has at least one <status>" });
  for (const s of statuses) checkAttrs(s.item, ATTRS.status, s.path, out);
  checkUnique(
    statuses.map((s) => ({ name: s.item.vm, path: `${s.path}/@vm` })),
    "VM",
    out,
  );
}

function validateReport(report: Report, out: Out): void {
  checkAttrs(report, ATTRS.report, "/nrdl/report", out);
  const results = indexed<Report["results"][number]>(report.results, "/nrdl/report/result");
  if (results.length === 0)
    out.push({
      path: "/nrdl/report/result[1]",
      message: "required element missing; a report has at least one <result>",
    });
  for (const r of results) checkAttrs(r.item, ATTRS.result, r.path, out);
  checkUnique(
    results.map((r) => ({ name: r.item.vm, path: `${r.path}/@vm` })),
    "VM",
    out,
  );
}
