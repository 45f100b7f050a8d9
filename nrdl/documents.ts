/**
 * Constructors for documents in code, with the same defaults the parser fills in (SPEC.md),
 * so an offer written here and one read off the wire compare equal.
 */
import { ATTRS, elementSince, POLICY_DEFAULTS, VM_DEFAULTS, type AttrSpec } from "./schema";
import type { NrdlBody, NrdlDocument, Offer, Policy, VmSpec } from "./types";

/**
 * A document in the lowest NRDL version that can say all of `body` (SPEC.md, "Versioning"): a
 * peer that speaks only an older version still understands everything that does not need more.
 * A dialog keeps its offer's version; pass it as `version` for every later document.
 */
export function nrdlDocument<B extends NrdlBody>(id: string, body: B, version = minimumVersion(body)): NrdlDocument<B> {
  return { version, id, body };
}

/** The lowest version whose vocabulary covers `body`: attributes off their default, elements present. */
export function minimumVersion(body: NrdlBody): number {
  let version = 1;
  const attrs = (obj: object, specs: readonly AttrSpec[]): void => {
    const values = obj as Record<string, unknown>;
    for (const spec of specs) {
      const value = values[spec.key];
      const implied = typeof spec.use === "object" && value === spec.use.default;
      if (value !== undefined && !implied) version = Math.max(version, spec.since);
    }
  };
  const elements = (name: string, items: readonly object[], specs: readonly AttrSpec[]): void => {
    if (items.length > 0) version = Math.max(version, elementSince(name));
    items.forEach((item) => attrs(item, specs));
  };
  switch (body.kind) {
    case "offer":
      attrs(body.policy, ATTRS.policy);
      elements("vm", body.vms, ATTRS.vm);
      body.vms.forEach((vm) => elements("disk", vm.disks, ATTRS.disk));
      break;
    case "answer":
      attrs(body, ATTRS.answer);
      elements("armed", body.armed, ATTRS.armed);
      body.armed.forEach((a) => elements("export", a.exports, ATTRS.export));
      break;
    case "preview":
      elements("accepted", body.accepted, ATTRS.accepted);
      break;
    case "status":
      elements("status", body.statuses, ATTRS.status);
      break;
    case "report":
      attrs(body, ATTRS.report);
      elements("result", body.results, ATTRS.result);
      break;
    case "recover":
    case "recovery":
    case "switchover":
    case "abort":
    case "decision":
    case "decision-query":
      version = Math.max(version, elementSince(body.kind));
      break;
  }
  return version;
}

/** What an offer must say; everything else takes its default. */
export interface OfferInput {
  id: string;
  sourceUri: string;
  destinationUri: string;
  policy?: Partial<Policy>;
  vms: Array<Pick<VmSpec, "name" | "memoryMib"> & Partial<Omit<VmSpec, "name" | "memoryMib">>>;
}

export function offerDocument(input: OfferInput): NrdlDocument<Offer> {
  const policy = { ...POLICY_DEFAULTS, ...input.policy };
  return nrdlDocument<Offer>(input.id, {
    kind: "offer",
    sourceUri: input.sourceUri,
    destinationUri: input.destinationUri,
    policy: { ...policy, maxParallel: policy.maxParallel ?? (policy.strategy === "sequential" ? 1 : input.vms.length) },
    vms: input.vms.map((vm) => ({ ...VM_DEFAULTS, dependsOn: [], disks: [], ...vm })),
  });
}

/**
 * Make any message (an exception text, a hypervisor's stderr) fit a `reason`/`host` attribute:
 * control characters become spaces, length is capped, and it is never empty.
 */
export function humanText(text: string, max = 1024): string {
  const clean = text
    .replace(/[\p{Cc}\p{Cs}\uFFFE\uFFFF]+/gu, " ")
    .replace(/\s+/g, " ")
    .trim();
  if (!clean) return "unknown";
  return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
}
