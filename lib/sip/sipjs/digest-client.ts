/** The digest client the core uses to retry a challenged request (401/407): MD5 and SHA-256, one realm. */
import { Core } from "sip.js";
import { answerDigest } from "../digest";

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
    const qop = Array.isArray(challenge.qop) ? challenge.qop.join(",") : challenge.qop;
    const creds = { username: this.user, password: this.secret, realm: this.onlyRealm };
    const header = answerDigest(
      { ...challenge, qop },
      request.method,
      request.ruri.toString(),
      creds,
      ++this.nonceCount,
    );
    if (!header) return false;
    this.header = header;
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
