/**
 * Where the destination's answer may send this host's VMs (#23, point 6). The answer names a
 * `tcp:HOST:PORT` per VM and an `nbd://HOST:PORT/EXPORT` per copied disk; whoever wrote or altered
 * it could point the VM's memory and whole disk at a third host with a key of its choosing. Each
 * host must be an address of the destination that was called (where its 200 OK came from, or what
 * the called URI's host resolves to) or lie in that destination's `migrationNetworks`
 * (security.destinations). Host names are resolved once here and every URI is rewritten to the
 * vetted address, so the migration connects where the check looked (no second DNS lookup).
 */
import { lookup } from "node:dns/promises";
import { BlockList, isIP } from "node:net";
import { TeleportError } from "../errors";
import type { ResponseInfo } from "../sip/backend";
import type { Answer } from "../../nrdl/types";
import { bareUri } from "./uri";

/** Every address a host name resolves to (IP literals resolve to themselves). */
export type Resolver = (host: string) => Promise<string[]>;

export const systemResolver: Resolver = async (host) =>
  isIP(host) ? [host] : (await lookup(host, { all: true })).map((a) => a.address);

export interface AnswerHostRules {
  /** Addresses of the destination that was called: its 200's network source, its URI's host resolved. */
  called: readonly string[];
  /** CIDRs (or single addresses) of the destination's migration network; may be empty. */
  networks: readonly string[];
}

const plain = (address: string): string => address.replace(/^::ffff:(?=\d+\.)/i, "").replace(/^\[|\]$/g, "");
const family = (address: string): "ipv4" | "ipv6" => (isIP(address) === 6 ? "ipv6" : "ipv4");

function networkList(entries: readonly string[]): BlockList {
  const list = new BlockList();
  for (const e of entries) {
    const [addr, prefix] = e.split("/");
    if (!isIP(addr)) continue; // the schema refuses these; never widen on a typo
    if (prefix === undefined) list.addAddress(addr, family(addr));
    else list.addSubnet(addr, Number(prefix), family(addr));
  }
  return list;
}

/** The host and the rest of a `tcp:HOST:PORT` or `nbd://HOST:PORT/EXPORT` (NRDL's validated forms). */
function split(uri: string): { scheme: string; host: string; rest: string } | undefined {
  const scheme = /^tcp:(?!\/\/)/.test(uri) ? "tcp:" : /^nbd:\/\//.test(uri) ? "nbd://" : undefined;
  if (!scheme) return undefined;
  let url: URL;
  try {
    url = new URL(`x://${uri.slice(scheme.length)}`);
  } catch {
    return undefined;
  }
  if (!url.hostname || !url.port) return undefined;
  return { scheme, host: plain(url.hostname), rest: `:${url.port}${url.pathname === "/" ? "" : url.pathname}` };
}

export class AnswerHosts {
  private readonly called: Set<string>;
  private readonly networks: BlockList;

  constructor(
    private readonly rules: AnswerHostRules,
    private readonly resolve: Resolver = systemResolver,
  ) {
    this.called = new Set(rules.called.map(plain).filter((a) => isIP(a)));
    this.networks = networkList(rules.networks);
  }

  private permitted(address: string): boolean {
    return this.called.has(address) || this.networks.check(address, family(address));
  }

  /** `uri` with its host replaced by the permitted address it names; a 502 "answer refused" otherwise. */
  async pin(uri: string, what: string): Promise<string> {
    const parts = split(uri);
    if (!parts) throw refused([`${what}: ${uri} is not a tcp: or nbd:// URI with a host and a port`]);
    const addresses = await this.resolve(parts.host).catch((err: unknown) => {
      throw refused([`${what}: cannot resolve ${parts.host} (${TeleportError.from(err).message})`]);
    });
    const ok = addresses.map(plain).find((a) => isIP(a) && this.permitted(a));
    if (!ok) {
      const at = addresses.length && addresses[0] !== parts.host ? ` (${addresses.join(", ")})` : "";
      throw refused([
        `${what}: ${parts.host}${at} is neither an address of the destination that was called ` +
          `(${[...this.called].join(", ") || "unknown"}) nor in its migration network ` +
          `(${this.rules.networks.join(", ") || "none configured"})`,
        "a destination on another migration address: list it as migrationNetworks of its security.destinations entry",
      ]);
    }
    return `${parts.scheme}${isIP(ok) === 6 ? `[${ok}]` : ok}${parts.rest}`;
  }

  /** The answer with every listener and export pinned to a vetted address; refuses it whole otherwise. */
  async pinAnswer(answer: Answer): Promise<Answer> {
    const armed = await Promise.all(
      answer.armed.map(async (a) => ({
        ...a,
        uri: await this.pin(a.uri, `${a.vm}'s listener`),
        exports: await Promise.all(
          a.exports.map(async (e) => ({ ...e, uri: await this.pin(e.uri, `${a.vm}'s disk ${e.disk}`) })),
        ),
      })),
    );
    return { ...answer, armed };
  }
}

/**
 * The addresses of the destination that was called: where its 200 OK came from, and what the
 * host of the URI that answered resolves to (a name that does not resolve adds nothing).
 */
export async function calledAddresses(
  target: string,
  response: ResponseInfo,
  resolve: Resolver = systemResolver,
): Promise<string[]> {
  const host = plain(bareUri(target).replace(/^sips?:(?:[^@]*@)?/i, ""));
  const named = await resolve(host).catch(() => []);
  return [...(response.source?.address ? [plain(response.source.address)] : []), ...named];
}

function refused(details: string[]): TeleportError {
  return new TeleportError(502, "answer refused", details);
}
