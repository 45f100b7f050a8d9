/**
 * Mutual TLS: what our TLS listeners ask of callers, and what a verified peer certificate says.
 * A certificate counts only when it chained to a CA we trust (`authorized`); its SIP identities
 * are its subjectAltName URI entries with a sip: or sips: scheme (RFC 5922 §7.1 style), nothing
 * else (not the CN, not DNS names), so the mapping is one rule an operator can check with openssl.
 */
import type tls from "node:tls";
import type { VerifiedCertificate } from "./backend";
import type { TlsFiles } from "./config";

/** With a client CA the listener asks for a certificate but lets callers without one in (they get a SIP answer). */
export function serverTlsOptions(files: TlsFiles | undefined): tls.TlsOptions {
  if (!files?.clientCa) return { cert: files?.cert, key: files?.key, ca: files?.ca };
  return { cert: files.cert, key: files.key, ca: files.clientCa, requestCert: true, rejectUnauthorized: false };
}

/** "URI:sip:dc1@a, DNS:b" (Node quotes an entry holding a comma as a JSON string) -> the sip:/sips: URIs. */
export function sipUrisOf(subjectAltName: string | undefined): string[] {
  const uris: string[] = [];
  const re = /URI:("(?:[^"\\]|\\.)*"|[^,]*)/g;
  for (let m = re.exec(subjectAltName ?? ""); m; m = re.exec(subjectAltName ?? "")) {
    const value = m[1].startsWith('"') ? (JSON.parse(m[1]) as string) : m[1].trim();
    if (/^sips?:/i.test(value)) uris.push(value);
  }
  return uris;
}

/** The peer's certificate when it was verified, else undefined (no certificate, or one we cannot trust). */
export function verifiedCertificate(socket: tls.TLSSocket): VerifiedCertificate | undefined {
  if (!socket.authorized) return undefined;
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return undefined;
  const subject = Object.entries(cert.subject ?? {})
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(", ");
  return { subject, sipUris: sipUrisOf(cert.subjectaltname) };
}
