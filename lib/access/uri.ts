/** SIP URI patterns of the allowlists: `*` matches any run of characters, the rest literally, case-insensitively. */
import { isIP } from "node:net";

/** Normalise "sip:user@host:port;params" to "sip:user@host" for matching. */
export function bareUri(uri: string): string {
  const m = /^(sips?:)(?:([^@;]+)@)?(\[[^\]]+\]|[^;:>]+)/i.exec(uri.trim().replace(/^<|>$/g, ""));
  if (!m) return uri;
  return `${m[1].toLowerCase()}${m[2] ? m[2] + "@" : ""}${m[3].toLowerCase()}`;
}

export function uriPattern(entry: string): RegExp {
  const escaped = entry.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return new RegExp(`^${escaped}$`, "i");
}

/** An allowlist entry that is an address or prefix ("10.0.0.1", "10.0.0.0/24", "2001:db8::/32"), not a URI. */
export function isAddressEntry(entry: string): boolean {
  return isIP(entry.split("/")[0]) !== 0;
}
