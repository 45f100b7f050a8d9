/** Small NRDL text builders for tests: each case states only what it breaks. */
import { formatViolation, parseNrdl } from "../../nrdl";
import type { Offer } from "../../nrdl/types";

export const NS = 'xmlns="urn:sip-teleport:nrdl:1"';
export const doc = (body: string, head = `${NS} version="1" id="mig-1"`): string => `<nrdl ${head}>${body}</nrdl>`;
export const offer = (vms: string, policy = ""): string =>
  doc(`<offer><source uri="sip:dc1@10.0.0.1"/><destination uri="sip:dc2@10.0.0.2"/>${policy}${vms}</offer>`);
export const vm = (name: string, extra = "", deps: string[] = []): string => {
  const attrs = `name="${name}" memory-mib="64"${extra ? ` ${extra}` : ""}`;
  return deps.length ? `<vm ${attrs}>${deps.map((d) => `<depends-on vm="${d}"/>`).join("")}</vm>` : `<vm ${attrs}/>`;
};

/** Violations as the CLI prints them; [] when the document is valid. */
export function violationsOf(xml: string): string[] {
  const result = parseNrdl(xml);
  return result.ok ? [] : result.violations.map(formatViolation);
}

/** The head of a version 2 document, and an offer of VM "a" in it with `policy`. */
export const V2 = 'xmlns="urn:sip-teleport:nrdl:2" version="2" id="mig-1"';
export const v2offer = (policy: string): string => offer(vm("a"), policy).replace(/<nrdl [^>]*>/, `<nrdl ${V2}>`);
export const ARMED = 'vm="a" uri="tcp:10.0.0.2:49152" secret="Qd8rT1mZ4xW7nB2vK5sL"';

/** The offer a valid document holds; throws with its violations otherwise. */
export function parsedOffer(xml: string): Offer {
  const parsed = parseNrdl(xml);
  if (!parsed.ok) throw new Error(parsed.violations.map((v) => v.message).join("; "));
  return parsed.doc.body as Offer;
}
