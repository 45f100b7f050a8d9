/**
 * The door every out-of-dialog request that can move VMs goes through (the destination's INVITE,
 * the console's MESSAGE trigger): digest when `security.users` is set, then the allowlist on the
 * caller's address and proven identities. Refusals are TeleportErrors; `headers()` adds the
 * challenge a 401 needs.
 */
import type { HostConfig } from "../config/schema";
import { TeleportError } from "../errors";
import type { IncomingRequest } from "../sip/backend";
import { DigestServer } from "../sip/digest";
import { AccessPolicy } from "./allowlist";
import { isTrustedProxy, provenIdentities, type ProvenIdentity } from "./identity";
import { dialogAdmission, inDialogRefusal, unprovableDialog, type DialogAdmission } from "./in-dialog";

/**
 * A 401 whose challenge says whether the nonce was merely stale (the caller may retry at once).
 * `logDetail` is for the log only: it tells an unknown user from a wrong password, the caller must not.
 */
export class DigestRefusal extends TeleportError {
  constructor(
    readonly stale: boolean,
    reason: string,
    readonly logDetail?: string,
  ) {
    super(401, "Unauthorized", [reason]);
  }
}

/** A refusal's details for the log: with what the caller was not told (see DigestRefusal). */
export function loggedDetails(e: TeleportError): readonly string[] {
  return e instanceof DigestRefusal && e.logDetail ? [...e.details, e.logDetail] : e.details;
}

export interface Admitted {
  /** The digest user, when the request authenticated. */
  user?: string;
  identities: ProvenIdentity[];
  /** What admitted the request: its dialog's INFO and BYE are held to it (`inDialog`). */
  admission: DialogAdmission;
}

export class CallerGate {
  private readonly policy: AccessPolicy;
  private readonly digest?: DigestServer;
  /** Refuse requests without valid credentials (else they are judged by the allowlist alone). */
  private readonly digestRequired: boolean;
  private readonly trustedProxies: readonly string[];

  constructor(config: HostConfig) {
    const { users, realm, nonceTtlS, digestRequired, allow, digestAlgorithms, allowLegacyDigest } = config.security;
    this.policy = new AccessPolicy(allow);
    if (Object.keys(users).length > 0)
      this.digest = new DigestServer({
        realm,
        users,
        algorithms: digestAlgorithms,
        allowNoQop: allowLegacyDigest,
        nonceTtlMs: nonceTtlS * 1000,
      });
    this.digestRequired = this.digest !== undefined && digestRequired !== false;
    this.trustedProxies = config.limits.trustedProxies;
  }

  /** The digest user of a request; undefined when digest is off or optional and absent. Throws 401 (400: bad uri=). */
  authenticate(req: IncomingRequest): string | undefined {
    const authorization = req.header("Authorization");
    if (!this.digest || (!authorization && !this.digestRequired)) return undefined;
    // A proxy retargets the Request-URI to the registered Contact: the caller signed the AOR it addressed (To).
    const uris = isTrustedProxy(req.source.address, this.trustedProxies) ? [req.ruri, req.toUri] : [req.ruri];
    const verdict = this.digest.verify(authorization, req.method, uris);
    if (verdict.ok) return verdict.user;
    if (verdict.badRequest) throw new TeleportError(400, "Bad Request", [verdict.reason]);
    throw new DigestRefusal(verdict.stale ?? false, verdict.reason, verdict.detail);
  }

  /** Authenticate, then judge the allowlist; throws 401/403. */
  admit(req: IncomingRequest): Admitted {
    const user = this.authenticate(req);
    const identities = provenIdentities(req, user, this.trustedProxies);
    const verdict = this.policy.judge({ address: req.source.address, fromUri: req.fromUri, identities });
    if ("denied" in verdict) throw new TeleportError(403, "Forbidden", [verdict.denied]);
    const admission = dialogAdmission(req, verdict, this.trustedProxies);
    const unprovable = req.method === "INVITE" ? unprovableDialog(admission) : undefined;
    if (unprovable) throw new TeleportError(403, "Forbidden", [unprovable]);
    return { user, identities, admission };
  }

  /** An in-dialog INFO or BYE that does not prove what admitted its dialog's INVITE: throws 403. */
  inDialog(req: IncomingRequest, admission: DialogAdmission): void {
    const denied = inDialogRefusal(req, admission, this.policy, this.trustedProxies);
    if (denied) throw new TeleportError(403, "Forbidden", [denied]);
  }

  /** Extra response headers a refusal needs (the digest challenge of a 401). */
  headers(e: TeleportError): Record<string, string | string[]> {
    return e instanceof DigestRefusal && this.digest ? { "WWW-Authenticate": this.digest.challenges(e.stale) } : {};
  }
}
