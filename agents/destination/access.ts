/**
 * Who may send this host a migration. An allowlist entry is either a source address
 * (IPv4/IPv6, optionally with a /prefix) or a SIP URI pattern where `*` matches any run of
 * characters ("sip:dc1@*", "sip:*@ops.example.net"). With an empty list only loopback may call.
 * When digest users are configured, the URI checked is the authenticated user's, not the From.
 */
import { BlockList, isIP } from "node:net";

export interface Caller {
  address: string;
  fromUri: string;
  /** Digest user name, when the request was authenticated. */
  authenticatedUser?: string;
}

function addressList(entries: readonly string[]): BlockList {
  const list = new BlockList();
  for (const e of entries) {
    const [addr, prefix] = e.split("/");
    const family = isIP(addr);
    if (!family) continue;
    const type = family === 6 ? "ipv6" : "ipv4";
    if (prefix !== undefined) list.addSubnet(addr, Number(prefix), type);
    else list.addAddress(addr, type);
  }
  return list;
}

function uriPattern(entry: string): RegExp {
  const escaped = entry.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
  return new RegExp(`^${escaped}$`, "i");
}

function isAddressEntry(entry: string): boolean {
  return isIP(entry.split("/")[0]) !== 0;
}

/** Normalise "sip:user@host:port;params" to "sip:user@host" for matching. */
export function bareUri(uri: string): string {
  const m = /^(sips?:)(?:([^@;]+)@)?([^;:>]+|\[[^\]]+\])/i.exec(uri.trim().replace(/^<|>$/g, ""));
  if (!m) return uri;
  return `${m[1].toLowerCase()}${m[2] ? m[2] + "@" : ""}${m[3].toLowerCase()}`;
}

export class AccessPolicy {
  private readonly addresses: BlockList;
  private readonly uris: RegExp[];
  private readonly loopbackOnly: boolean;

  constructor(allow: readonly string[]) {
    this.loopbackOnly = allow.length === 0;
    this.addresses = addressList(this.loopbackOnly ? ["127.0.0.0/8", "::1"] : allow);
    this.uris = allow.filter((e) => !isAddressEntry(e)).map(uriPattern);
  }

  private addressAllowed(address: string): boolean {
    const plain = address.replace(/^::ffff:/i, "");
    const family = isIP(plain);
    return family !== 0 && this.addresses.check(plain, family === 6 ? "ipv6" : "ipv4");
  }

  /** undefined when allowed, else the reason for a 403. */
  check(caller: Caller): string | undefined {
    if (this.addressAllowed(caller.address)) return undefined;
    const identity = caller.authenticatedUser
      ? bareUri(caller.fromUri).replace(/^(sips?:)[^@]*@/, `$1${caller.authenticatedUser}@`)
      : bareUri(caller.fromUri);
    if (this.uris.some((re) => re.test(identity))) return undefined;
    return this.loopbackOnly
      ? `${caller.address} is not loopback and this host allows no other caller (configure security.allow)`
      : `${identity} from ${caller.address} is not in this host's allowlist`;
  }
}
