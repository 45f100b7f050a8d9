/**
 * In-dialog requests (INFO, BYE) must come from whoever the dialog's INVITE proved to be: a forged
 * BYE would cut a migration, a forged INFO fake its progress. Dialogs opened with digest are
 * re-challenged (security.digestInDialog, the destination agent's job); the others are held to
 * what admitted their INVITE:
 * - its address: the request comes from an address the allowlist admits;
 * - a client certificate: the request arrives over TLS with a verified certificate naming the same URI;
 * - a trusted proxy's P-Asserted-Identity: the request comes from a trusted proxy asserting the same
 *   identity, or, asserting nothing, from the very proxy that record-routed the INVITE (RFC 3261
 *   16.12: in-dialog requests follow the Record-Route, and deploy/kamailio asserts on INVITE only).
 */
import type { IncomingRequest } from "../sip/backend";
import type { AccessPolicy } from "./allowlist";
import { assertedUris, isTrustedProxy, provenIdentities, type ProvenIdentity } from "./identity";

export type DialogAdmission =
  | { by: "address" }
  | {
      by: "identity";
      /** The proven identities of the INVITE that matched security.allow. */
      identities: ProvenIdentity[];
      /** The trusted proxy that delivered the INVITE and put itself in its Record-Route. */
      relay?: string;
    };

const plain = (address: string): string => address.replace(/^::ffff:/i, "");
const same = (a: ProvenIdentity, b: ProvenIdentity): boolean => a.uri === b.uri && a.proof === b.proof;

/** What admitted `invite` (as judged by the allowlist), for its dialog's later requests. */
export function dialogAdmission(
  invite: IncomingRequest,
  verdict: { by: "address" } | { by: "identity"; matched: ProvenIdentity[] },
  trustedProxies: readonly string[],
): DialogAdmission {
  if (verdict.by === "address") return { by: "address" };
  const relayed =
    verdict.matched.some((id) => id.proof === "proxy") &&
    isTrustedProxy(invite.source.address, trustedProxies) &&
    invite.header("Record-Route") !== undefined;
  return { by: "identity", identities: verdict.matched, relay: relayed ? plain(invite.source.address) : undefined };
}

/**
 * A dialog admitted only on a proxy's assertion whose in-dialog requests could never be proven (the
 * proxy did not Record-Route, so they would come straight from the caller): the reason to refuse it now.
 */
export function unprovableDialog(admission: DialogAdmission): string | undefined {
  if (admission.by !== "identity" || admission.relay !== undefined) return undefined;
  if (!admission.identities.every((id) => id.proof === "proxy")) return undefined;
  return (
    "admitted only on a trusted proxy's P-Asserted-Identity, but the proxy did not Record-Route the INVITE: " +
    "its INFO and BYE would come from an unproven address (configure the proxy to record-route, as " +
    "deploy/kamailio/kamailio.cfg does)"
  );
}

/** undefined when `req` (INFO, BYE) proves what admitted its dialog, else the reason for a 403. */
export function inDialogRefusal(
  req: IncomingRequest,
  admission: DialogAdmission,
  policy: AccessPolicy,
  trustedProxies: readonly string[],
): string | undefined {
  const address = plain(req.source.address);
  if (admission.by === "address") {
    if (policy.addressAllowed(address)) return undefined;
    return `${req.method} from ${address}, which is not in this host's allowlist (the dialog was admitted by address)`;
  }
  const needed = admission.identities.filter((id) => id.proof !== "digest");
  if (needed.length === 0) return undefined; // digest only: re-challenged, or digestInDialog is off
  const proven = provenIdentities(req, undefined, trustedProxies);
  if (proven.some((p) => needed.some((n) => same(p, n)))) return undefined;
  const relayed = admission.relay === address && assertedUris(req.header("P-Asserted-Identity")).length === 0;
  if (relayed) return undefined;
  const opener = needed.map((id) => `${id.uri} (${id.proof})`).join(", ");
  const who = proven.length ? proven.map((id) => `${id.uri} (${id.proof})`).join(", ") : "no identity";
  const over = req.source.transport.toUpperCase();
  return `${req.method} from ${address} over ${over} proves ${who}, but ${opener} opened this dialog`;
}
