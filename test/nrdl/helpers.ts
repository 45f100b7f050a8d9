/** Small NRDL text builders for tests: each case states only what it breaks. */
import { formatViolation, parseNrdl } from "../../nrdl";

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
