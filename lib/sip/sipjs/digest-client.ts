/** The digest client the core uses to retry a challenged request (401/407): MD5 and SHA-256, one realm. */
import crypto from "node:crypto";
import { Core } from "sip.js";

/**
 * Our own digest client: sip.js's speaks MD5 only, RFC 8760 wants SHA-256 first. It keeps its
 * state here and overrides both methods the core calls (authenticate, toString). It answers only
 * the configured realm's challenges (any realm when none is set).
 */
export class RealmDigest extends Core.DigestAuthentication {
  private nonceCount = 0;
  private header = "";

  constructor(
    loggerFactory: Core.LoggerFactory,
    private readonly user: string,
    private readonly secret: string,
    private readonly onlyRealm: string | undefined,
  ) {
    super(loggerFactory, undefined, user, secret);
  }

  override authenticate(request: Core.OutgoingRequestMessage, challenge: DigestChallenge): boolean {
    if (this.onlyRealm !== undefined && challenge.realm !== this.onlyRealm) return false;
    const algorithm = (challenge.algorithm ?? "MD5").toUpperCase();
    if ((algorithm !== "MD5" && algorithm !== "SHA-256") || !challenge.realm || !challenge.nonce) return false;
    const qops = String(challenge.qop ?? "")
      .split(",")
      .map((q) => q.trim());
    if (challenge.qop && !qops.includes("auth")) return false;
    const h = (s: string) =>
      crypto
        .createHash(algorithm === "MD5" ? "md5" : "sha256")
        .update(s)
        .digest("hex");
    const uri = request.ruri.toString();
    const ha1 = h(`${this.user}:${challenge.realm}:${this.secret}`);
    const ha2 = h(`${request.method}:${uri}`);
    this.nonceCount++;
    const nc = this.nonceCount.toString(16).padStart(8, "0");
    const cnonce = crypto.randomBytes(8).toString("hex");
    const response = challenge.qop
      ? h(`${ha1}:${challenge.nonce}:${nc}:${cnonce}:auth:${ha2}`)
      : h(`${ha1}:${challenge.nonce}:${ha2}`);
    const params = [
      `algorithm=${algorithm}`,
      `username="${this.user}"`,
      `realm="${challenge.realm}"`,
      `nonce="${challenge.nonce}"`,
      `uri="${uri}"`,
      `response="${response}"`,
    ];
    if (challenge.opaque) params.push(`opaque="${challenge.opaque}"`);
    if (challenge.qop) params.push("qop=auth", `cnonce="${cnonce}"`, `nc=${nc}`);
    this.header = `Digest ${params.join(", ")}`;
    return true;
  }

  override toString(): string {
    return this.header;
  }
}

interface DigestChallenge {
  realm?: string;
  nonce?: string;
  algorithm?: string;
  qop?: string | string[];
  opaque?: string;
}
