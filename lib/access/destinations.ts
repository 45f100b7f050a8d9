/**
 * Where this host may send its VMs (`security.destinations`, source side): SIP URI patterns
 * (`*` = any run of characters) matched against the target's scheme, user and host (port and
 * parameters are not part of the match). An empty list permits loopback targets only, the way an
 * empty `security.allow` admits loopback callers only.
 */
import { bareUri, uriPattern } from "./uri";

const LOOPBACK_HOST = /^(localhost|127(\.\d{1,3}){3}|\[::1\]|::1)$/i;

function hostOf(bare: string): string {
  return bare.replace(/^sips?:(?:[^@]*@)?/i, "");
}

export class DestinationPolicy {
  private readonly patterns: RegExp[];

  constructor(private readonly entries: readonly string[]) {
    this.patterns = entries.map((e) => uriPattern(bareUri(e)));
  }

  /** undefined when `target` is permitted, else the reason for a 403. */
  check(target: string): string | undefined {
    const bare = bareUri(target);
    if (this.entries.length === 0) {
      if (LOOPBACK_HOST.test(hostOf(bare))) return undefined;
      return `${bare} is not a permitted destination: security.destinations is empty, which permits loopback only`;
    }
    if (this.patterns.some((re) => re.test(bare))) return undefined;
    return `${bare} is not a permitted destination (security.destinations: ${this.entries.join(", ")})`;
  }
}
