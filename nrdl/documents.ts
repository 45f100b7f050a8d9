/**
 * Constructors for documents in code, with the same defaults the parser fills in (SPEC.md),
 * so an offer written here and one read off the wire compare equal.
 */
import { POLICY_DEFAULTS, VM_DEFAULTS } from "./schema";
import { NRDL_VERSION, type NrdlBody, type NrdlDocument, type Offer, type Policy, type VmSpec } from "./types";

export function nrdlDocument<B extends NrdlBody>(id: string, body: B): NrdlDocument<B> {
  return { version: NRDL_VERSION, id, body };
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
    vms: input.vms.map((vm) => ({ ...VM_DEFAULTS, dependsOn: [], ...vm })),
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
