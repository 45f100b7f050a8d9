/**
 * Where this host may send its VMs (`security.destinations`, source side): SIP URI patterns
 * (`*` = any run of characters) matched against the target's scheme, user and host (port and
 * parameters are not part of the match). An empty list permits loopback targets only, the way an
 * empty `security.allow` admits loopback callers only. An entry may be `{ uri, migrationNetworks }`:
 * the networks where that destination's answer may put its listeners and NBD exports besides the
 * address it was called on (answer-hosts.ts).
 */
import { bareUri, uriPattern } from "./uri";

export type DestinationEntry = string | { uri: string; migrationNetworks?: readonly string[] };

const LOOPBACK_HOST = /^(localhost|127(\.\d{1,3}){3}|\[::1\]|::1)$/i;

function hostOf(bare: string): string {
  return bare.replace(/^sips?:(?:[^@]*@)?/i, "");
}

/** The URI pattern of an entry, whichever form it is written in. */
export const destinationUri = (e: DestinationEntry): string => (typeof e === "string" ? e : e.uri);

export class DestinationPolicy {
  private readonly patterns: RegExp[];
  private readonly uris: string[];

  constructor(private readonly entries: readonly DestinationEntry[]) {
    this.uris = entries.map(destinationUri);
    this.patterns = this.uris.map((e) => uriPattern(bareUri(e)));
  }

  /** undefined when `target` is permitted, else the reason for a 403. */
  check(target: string): string | undefined {
    const bare = bareUri(target);
    if (this.entries.length === 0) {
      if (LOOPBACK_HOST.test(hostOf(bare))) return undefined;
      return `${bare} is not a permitted destination: security.destinations is empty, which permits loopback only`;
    }
    if (this.patterns.some((re) => re.test(bare))) return undefined;
    return `${bare} is not a permitted destination (security.destinations: ${this.uris.join(", ")})`;
  }

  /** The migration networks of every entry that matches `target` (none for a target no entry lists). */
  migrationNetworks(target: string): string[] {
    const bare = bareUri(target);
    return this.entries.flatMap((e, i) =>
      typeof e !== "string" && this.patterns[i].test(bare) ? [...(e.migrationNetworks ?? [])] : [],
    );
  }
}
