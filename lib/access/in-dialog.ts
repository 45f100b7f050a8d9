/**
 * In-dialog requests (INFO, BYE) must come from whoever the dialog's INVITE proved to be: a forged
 * BYE would cut a migration, a forged INFO fake its progress. Each is held to what admitted its
 * INVITE (`peer` is the INVITE's source address):
 * - its address: the request comes from that very address (not merely one the allowlist admits);
 * - digest only: re-challenged (security.digestInDialog, the gate's job); with the challenge off,
 *   the request must come from the admitted peer's address;
 * - a client certificate: the request arrives over TLS with a verified certificate naming the same URI;
 * - a trusted proxy's P-Asserted-Identity: the request comes from a trusted proxy asserting the same
 *   identity, or, asserting nothing, from the very proxy that record-routed the INVITE (RFC 3261
 *   16.12: in-dialog requests follow the Record-Route, and deploy/kamailio asserts on INVITE only).
 */
import type { IncomingRequest } from "../sip/backend";
import { assertedUris, isTrustedProxy, provenIdentities, type ProvenIdentity } from "./identity";

export type DialogAdmission =
  | { by: "address"; peer: string }
  | {
      by: "identity";
      /** The INVITE's source address. */
      peer: string;
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
  const peer = plain(invite.source.address);
  if (verdict.by === "address") return { by: "address", peer };
  const relayed =
    verdict.matched.some((id) => id.proof === "proxy") &&
    isTrustedProxy(invite.source.address, trustedProxies) &&
    invite.header("Record-Route") !== undefined;
  return { by: "identity", peer, identities: verdict.matched, relay: relayed ? peer : undefined };
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

/**
 * undefined when `req` (INFO, BYE) proves what admitted its dialog, else the reason for a 403.
 * `challenged`: the caller re-checks the INVITE's digest user itself (security.digestInDialog).
 */
export function inDialogRefusal(
  req: IncomingRequest,
  admission: DialogAdmission,
  trustedProxies: readonly string[],
  challenged: boolean,
): string | undefined {
  const address = plain(req.source.address);
  if (admission.by === "address") {
    if (address === admission.peer) return undefined;
    return `${req.method} from ${address}, but this dialog was admitted by the address ${admission.peer}`;
  }
  const needed = admission.identities.filter((id) => id.proof !== "digest");
  if (needed.length === 0) {
    if (challenged || address === admission.peer) return undefined;
    return (
      `${req.method} from ${address}, but this dialog was opened with digest from ${admission.peer} ` +
      "(security.digestInDialog is off: only that address may send it)"
    );
  }
  const proven = provenIdentities(req, undefined, trustedProxies);
  if (proven.some((p) => needed.some((n) => same(p, n)))) return undefined;
  const relayed = admission.relay === address && assertedUris(req.header("P-Asserted-Identity")).length === 0;
  if (relayed) return undefined;
  const opener = needed.map((id) => `${id.uri} (${id.proof})`).join(", ");
  const who = proven.length ? proven.map((id) => `${id.uri} (${id.proof})`).join(", ") : "no identity";
  const over = req.source.transport.toUpperCase();
  return `${req.method} from ${address} over ${over} proves ${who}, but ${opener} opened this dialog`;
}
