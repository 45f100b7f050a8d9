/**
 * Who may send this host a migration (`security.allow`). An entry is either a source address
 * (IPv4/IPv6, optionally with a /prefix), matched against the request's network source, or a SIP
 * URI pattern where `*` matches any run of characters ("sip:dc1@*", "sip:*@ops.example.net"),
 * matched only against proven identities (identity.ts), never against the From header. An empty
 * list admits no one: loopback is no identity (on a hypervisor host every local account can use it).
 */
import { BlockList, isIP } from "node:net";
import type { ProvenIdentity } from "./identity";
import { bareUri, isAddressEntry, uriPattern } from "./uri";

export interface Caller {
  address: string;
  /** The From header: only quoted back in a refusal, it proves nothing. */
  fromUri: string;
  identities: readonly ProvenIdentity[];
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

export type Verdict = { by: "address" } | { by: "identity"; matched: ProvenIdentity[] } | { denied: string };

export class AccessPolicy {
  private readonly addresses: BlockList;
  private readonly uris: RegExp[];
  private readonly empty: boolean;

  constructor(allow: readonly string[]) {
    this.empty = allow.length === 0;
    this.addresses = addressList(allow);
    this.uris = allow.filter((e) => !isAddressEntry(e)).map(uriPattern);
  }

  addressAllowed(address: string): boolean {
    const plain = address.replace(/^::ffff:/i, "");
    const family = isIP(plain);
    return family !== 0 && this.addresses.check(plain, family === 6 ? "ipv6" : "ipv4");
  }

  /** How `caller` is admitted: by its address, by the proven identities that match an entry, or not (why). */
  judge(caller: Caller): Verdict {
    if (this.addressAllowed(caller.address)) return { by: "address" };
    const matched = caller.identities.filter((id) => this.uris.some((re) => re.test(id.uri)));
    if (matched.length) return { by: "identity", matched };
    if (this.empty)
      return {
        denied:
          "security.allow is empty: this host admits no caller (list the source's address, or its SIP URI " +
          "proven by digest, a TLS client certificate or a trusted proxy)",
      };
    if (caller.identities.length === 0)
      return {
        denied:
          `no proven identity from ${caller.address} (From ${bareUri(caller.fromUri)} proves nothing: ` +
          "authenticate with digest, a TLS client certificate or through a trusted proxy), " +
          "and the address is not in this host's allowlist",
      };
    const who = caller.identities.map((id) => `${id.uri} (${id.proof})`).join(", ");
    return { denied: `${who} from ${caller.address} is not in this host's allowlist` };
  }

  /** undefined when allowed, else the reason for a 403. */
  check(caller: Caller): string | undefined {
    const verdict = this.judge(caller);
    return "denied" in verdict ? verdict.denied : undefined;
  }
}
