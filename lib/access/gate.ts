/**
 * The door every out-of-dialog request that can move VMs goes through (the destination's INVITE
 * and its dry run, the console's MESSAGE trigger), one code path for all: TLS when required, the
 * INVITE rate per sender, digest when `security.users` is set, then the allowlist on the caller's
 * address and proven identities. In-dialog INFO and BYE are held to what admitted their dialog.
 * Refusals are TeleportErrors; `headers()` adds what a 401 or 503 needs.
 */
import type { HostConfig } from "../config/schema";
import { TeleportError } from "../errors";
import type { IncomingRequest } from "../sip/backend";
import { DigestServer } from "../sip/digest";
import { RateLimiter } from "../sip/rate";
import { AccessPolicy } from "./allowlist";
import { assertedUris, callerOf, isTrustedProxy, provenIdentities, type ProvenIdentity } from "./identity";
import { dialogAdmission, inDialogRefusal, unprovableDialog, type DialogAdmission } from "./in-dialog";
import { bareUri } from "./uri";

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

/** A 503 that tells the caller when to come back. */
export class Overload extends TeleportError {
  constructor(
    readonly retryAfterS: number,
    reason: string,
  ) {
    super(503, "Service Unavailable", [reason]);
  }
}

export interface Admitted {
  /** The digest user, when the request authenticated. */
  user?: string;
  identities: ProvenIdentity[];
  /** What admitted the request: its dialog's INFO and BYE are held to it (`inDialog`). */
  admission: DialogAdmission;
  /** Who per-caller limits count against (identity.ts `callerOf`). */
  caller: string;
}

/** What an in-dialog request is held to: the dialog's admission and its digest user, if any. */
export interface OpenedDialog {
  admission: DialogAdmission;
  user?: string;
}

export class CallerGate {
  private readonly policy: AccessPolicy;
  private readonly digest?: DigestServer;
  /** Refuse requests without valid credentials (else they are judged by the allowlist alone). */
  private readonly digestRequired: boolean;
  private readonly digestInDialog: boolean;
  private readonly trustedProxies: readonly string[];
  private readonly aor: string;
  private readonly tlsOnly: boolean;
  private readonly rate: RateLimiter;
  private readonly perSecond: number;

  constructor(config: HostConfig) {
    this.aor = config.sip.aor;
    const { users, realm, nonceTtlS, digestRequired, digestInDialog, allow } = config.security;
    const { digestAlgorithms, allowLegacyDigest } = config.security;
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
    this.digestInDialog = digestInDialog;
    this.trustedProxies = config.limits.trustedProxies;
    this.tlsOnly = config.sip.tlsOnly;
    this.perSecond = config.limits.invitesPerSecond;
    this.rate = new RateLimiter(this.perSecond);
  }

  /** A request that starts work (INVITE, dry run, MESSAGE trigger): TLS, rate, digest, allowlist. Throws. */
  admit(req: IncomingRequest): Admitted {
    this.requireTls(req);
    this.limitRate(req);
    return this.identify(req);
  }

  /** TLS, digest and allowlist without counting against the rate (a capacity query starts nothing). Throws. */
  identify(req: IncomingRequest): Admitted {
    this.requireTls(req);
    const user = this.authenticate(req);
    const identities = provenIdentities(req, user, this.trustedProxies);
    const verdict = this.policy.judge({ address: req.source.address, fromUri: req.fromUri, identities });
    if ("denied" in verdict) throw new TeleportError(403, "Forbidden", [verdict.denied]);
    const admission = dialogAdmission(req, verdict, this.trustedProxies);
    const unprovable = req.method === "INVITE" ? unprovableDialog(admission) : undefined;
    if (unprovable) throw new TeleportError(403, "Forbidden", [unprovable]);
    return { user, identities, admission, caller: callerOf(req.source.address, user, identities) };
  }

  /**
   * An in-dialog INFO or BYE: TLS when required, what admitted the dialog (in-dialog.ts), and with
   * security.digestInDialog the INVITE's digest user again (challenged like it). Throws 401/403.
   */
  inDialog(req: IncomingRequest, opened: OpenedDialog): void {
    this.requireTls(req);
    const challenged = this.digestInDialog && opened.user !== undefined;
    const denied = inDialogRefusal(req, opened.admission, this.trustedProxies, challenged);
    if (denied) throw new TeleportError(403, "Forbidden", [denied]);
    if (!challenged) return;
    const user = this.authenticate(req);
    if (user !== opened.user)
      throw new TeleportError(403, "Forbidden", [
        `${req.method} from digest user ${user ?? "(none)"}, but ${opened.user} opened this dialog`,
      ]);
  }

  /** Extra response headers a refusal needs (a 401's digest challenge, a 503's Retry-After). */
  headers(e: TeleportError): Record<string, string | string[]> {
    if (e instanceof Overload) return { "Retry-After": String(e.retryAfterS) };
    return e instanceof DigestRefusal && this.digest ? { "WWW-Authenticate": this.digest.challenges(e.stale) } : {};
  }

  /** The digest user of a request; undefined when digest is off or optional and absent. Throws 401 (400: bad uri=). */
  private authenticate(req: IncomingRequest): string | undefined {
    const authorization = req.header("Authorization");
    if (!this.digest || (!authorization && !this.digestRequired)) return undefined;
    // A proxy retargets the Request-URI to the registered Contact: the caller signed the AOR it addressed, this
    // agent's own (credentials computed for us, whoever relayed them), or the To of a trusted proxy's request.
    const uris = [req.ruri, this.aor, ...(isTrustedProxy(req.source.address, this.trustedProxies) ? [req.toUri] : [])];
    const verdict = this.digest.verify(authorization, req.method, uris);
    if (verdict.ok) return verdict.user;
    if (verdict.badRequest) throw new TeleportError(400, "Bad Request", [verdict.reason]);
    throw new DigestRefusal(verdict.stale ?? false, verdict.reason, verdict.detail);
  }

  private requireTls(req: IncomingRequest): void {
    if (this.tlsOnly && req.source.transport !== "tls")
      throw new TeleportError(403, "TLS Required", [
        `this host accepts only TLS, got ${req.method} over ${req.source.transport.toUpperCase()}`,
      ]);
  }

  /**
   * limits.invitesPerSecond per sender, before any digest is computed (a refusal costs less than the
   * request). Behind a trusted proxy every caller shares its address: count them one by one.
   */
  private limitRate(req: IncomingRequest): void {
    const address = req.source.address.replace(/^::ffff:/i, "");
    const asserted = assertedUris(req.header("P-Asserted-Identity"))[0];
    const sender = isTrustedProxy(address, this.trustedProxies)
      ? `${bareUri(asserted ?? req.fromUri)} via ${address}`
      : address;
    const wait = this.rate.take(sender);
    const what = req.method === "MESSAGE" ? "MESSAGE triggers" : "INVITEs"; // a dry run counts as an INVITE
    if (wait !== undefined) throw new Overload(wait, `more than ${this.perSecond} ${what} per second from ${sender}`);
  }
}
