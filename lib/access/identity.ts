/**
 * Who a request proves to be. Three proofs count, and nothing else (a From header is whatever
 * the sender typed):
 * - digest: the user that authenticated with this host's `security.users`; the identity is the
 *   From URI with its user part replaced by that user (every digest user is this host's own);
 * - certificate: each sip:/sips: subjectAltName URI of a TLS client certificate that chained to
 *   `sip.tls.clientCa` (see lib/sip/peer-certificate.ts);
 * - proxy: the P-Asserted-Identity (RFC 3325) of a request whose network source is listed in
 *   `limits.trustedProxies`; the same header from any other address is ignored.
 */
import type { IncomingRequest } from "../sip/backend";
import { bareUri } from "./uri";

export type Proof = "digest" | "certificate" | "proxy";

export interface ProvenIdentity {
  /** Normalised "sip:user@host". */
  uri: string;
  proof: Proof;
}

/** The SIP URIs of a P-Asserted-Identity value (`"Name" <sip:a@b>, <tel:+1>`); tel: and others are skipped. */
export function assertedUris(value: string | undefined): string[] {
  if (!value) return [];
  const bracketed = [...value.matchAll(/<([^>]*)>/g)].map((m) => m[1]);
  const uris = bracketed.length ? bracketed : value.split(",").map((v) => v.trim().split(";")[0]);
  return uris.filter((u) => /^sips?:/i.test(u.trim())).map((u) => u.trim());
}

export function isTrustedProxy(address: string, trustedProxies: readonly string[]): boolean {
  return trustedProxies.includes(address.replace(/^::ffff:/i, ""));
}

/** Every identity `req` proves; `digestUser` is the user it authenticated as, if any. */
export function provenIdentities(
  req: IncomingRequest,
  digestUser: string | undefined,
  trustedProxies: readonly string[],
): ProvenIdentity[] {
  const out: ProvenIdentity[] = [];
  if (digestUser !== undefined) {
    const from = bareUri(req.fromUri);
    const host = from.includes("@") ? from.slice(from.indexOf("@") + 1) : from.replace(/^sips?:/i, "");
    out.push({ uri: `${/^sips:/i.test(from) ? "sips" : "sip"}:${digestUser}@${host}`, proof: "digest" });
  }
  for (const uri of req.source.certificate?.sipUris ?? []) out.push({ uri: bareUri(uri), proof: "certificate" });
  if (isTrustedProxy(req.source.address, trustedProxies))
    for (const uri of assertedUris(req.header("P-Asserted-Identity"))) out.push({ uri: bareUri(uri), proof: "proxy" });
  return out;
}

/**
 * Who a per-caller limit counts against: the digest user, else a certificate's or trusted proxy's
 * identity (many callers behind one proxy are many callers), else the source address.
 */
export function callerOf(
  address: string,
  digestUser: string | undefined,
  identities: readonly ProvenIdentity[],
): string {
  if (digestUser !== undefined) return `digest user ${digestUser}`;
  const proven = identities.find((id) => id.proof !== "digest");
  return proven ? `${proven.uri} (${proven.proof})` : address.replace(/^::ffff:/i, "");
}
