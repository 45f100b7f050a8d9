/**
 * Server side of SIP digest authentication (RFC 3261 §22, RFC 7616 / RFC 8760): challenges
 * with SHA-256 (MD5 and answers without qop only for a configured legacy peer), verifies responses,
 * and refuses expired or replayed nonces.
 * Nonces are stateless (timestamp + HMAC) so a restart does not need a nonce store; replay
 * is caught by remembering the (nonce, nc) pairs already accepted while the nonce lives.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { Grammar } from "sip.js";

export type DigestAlgorithm = "SHA-256" | "MD5";

export interface DigestOptions {
  realm: string;
  /** user name -> password; only the record's own entries count (a name from the network indexes it). */
  users: Readonly<Record<string, string>>;
  /** Offered in this order (RFC 8760: strongest first). Default: SHA-256 only. */
  algorithms?: DigestAlgorithm[];
  /** Accept RFC 2069 answers without qop=auth (no client nonce, no count): only for a legacy peer. */
  allowNoQop?: boolean;
  nonceTtlMs?: number;
}

/**
 * `badRequest`: the credentials were computed for another URI (RFC 2617 §3.2.2.5: answer 400).
 * `reason` goes to the caller; `detail`, for the log only, tells what the caller must not learn
 * (whether the user name exists).
 */
export type DigestVerdict =
  { ok: true; user: string } | { ok: false; reason: string; detail?: string; stale?: boolean; badRequest?: boolean };

/** One answer for an unknown user and a wrong password, so a 401 does not enumerate users. */
export const BAD_CREDENTIALS = "wrong user name or password";

/** Compare URIs as sip.js prints them (host case, parameter spelling), falling back to the text. */
function sameUri(a: string, b: string): boolean {
  const norm = (u: string) => Grammar.URIParse(u.trim())?.toString() ?? u.trim();
  return norm(a) === norm(b);
}

const hash = (alg: DigestAlgorithm, s: string) =>
  createHash(alg === "MD5" ? "md5" : "sha256")
    .update(s)
    .digest("hex");

/** Parse `Digest a="b", c=d` into a map (quoted values unescaped). */
export function parseDigestHeader(value: string): Record<string, string> {
  // null prototype: a parameter named __proto__ or constructor is a plain entry, nothing inherited
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  const body = value.replace(/^\s*Digest\s+/i, "");
  const re = /([a-zA-Z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  for (let m = re.exec(body); m; m = re.exec(body))
    out[m[1].toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3];
  return out;
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class DigestServer {
  private readonly key = randomBytes(32);
  private readonly used = new Map<string, number>(); // nonce -> expiry (ms), with nc list below
  private readonly seenNc = new Map<string, Set<string>>();
  private readonly algorithms: DigestAlgorithm[];
  private readonly ttl: number;
  private readonly users: ReadonlyMap<string, string>;
  /** Hashed for unknown users, so they cost what a wrong password costs. */
  private readonly decoy = randomBytes(16).toString("hex");

  constructor(private readonly opts: DigestOptions) {
    this.algorithms = opts.algorithms ?? ["SHA-256"];
    this.ttl = opts.nonceTtlMs ?? 60_000;
    this.users = new Map(Object.entries(opts.users));
  }

  private nonce(now = Date.now()): string {
    const ts = now.toString(36);
    const mac = createHmac("sha256", this.key).update(ts).digest("base64url").slice(0, 22);
    return `${ts}.${mac}`;
  }

  private nonceAge(nonce: string, now: number): number | undefined {
    const [ts, mac] = nonce.split(".");
    if (!ts || !mac) return undefined;
    const expected = createHmac("sha256", this.key).update(ts).digest("base64url").slice(0, 22);
    if (!safeEqual(mac, expected)) return undefined;
    return now - parseInt(ts, 36);
  }

  /** WWW-Authenticate (or Proxy-Authenticate) values, one per algorithm, strongest first. */
  challenges(stale = false): string[] {
    const nonce = this.nonce();
    return this.algorithms.map(
      (alg) =>
        `Digest realm="${this.opts.realm}", nonce="${nonce}", algorithm=${alg}, ` +
        `qop="auth"${stale ? ", stale=true" : ""}`,
    );
  }

  /**
   * `requestUris`: the Request-URI, plus the To URI when a trusted proxy retargeted the request;
   * the credentials' `uri=` must be one of them (none given: not checked).
   */
  verify(
    authorization: string | undefined,
    method: string,
    requestUris: readonly string[] = [],
    now = Date.now(),
  ): DigestVerdict {
    if (!authorization) return { ok: false, reason: "authentication required" };
    const p = parseDigestHeader(authorization);
    const named = (p.algorithm ?? "MD5").toUpperCase();
    const alg = named === "SHA-256" || named === "MD5" ? named : undefined;
    if (!alg || !this.algorithms.includes(alg))
      return { ok: false, reason: `digest algorithm ${p.algorithm ?? "MD5 (none named)"} not accepted` };
    if (p.qop === undefined ? !this.opts.allowNoQop : p.qop !== "auth" || !p.cnonce || !p.nc)
      return { ok: false, reason: "digest answer without qop=auth, cnonce and nc not accepted" };
    if (p.realm !== this.opts.realm) return { ok: false, reason: `wrong realm ${JSON.stringify(p.realm ?? "")}` };
    const age = p.nonce ? this.nonceAge(p.nonce, now) : undefined;
    if (age === undefined) return { ok: false, reason: "nonce not issued by this host" };
    if (age > this.ttl || age < -5_000) return { ok: false, reason: "nonce expired", stale: true };
    const username = p.username ?? "";
    const password = this.users.get(username);
    const ha1 = hash(alg, `${username}:${this.opts.realm}:${password ?? this.decoy}`);
    const ha2 = hash(alg, `${method}:${p.uri ?? ""}`);
    const expected = p.qop
      ? hash(alg, `${ha1}:${p.nonce}:${p.nc}:${p.cnonce}:${p.qop}:${ha2}`)
      : hash(alg, `${ha1}:${p.nonce}:${ha2}`);
    const matches = p.response !== undefined && safeEqual(p.response.toLowerCase(), expected);
    if (password === undefined || !matches) {
      const detail = `${password === undefined ? "unknown user" : "wrong password for"} ${JSON.stringify(username)}`;
      return { ok: false, reason: BAD_CREDENTIALS, detail };
    }
    if (requestUris.length && !requestUris.some((u) => sameUri(u, p.uri ?? "")))
      return {
        ok: false,
        badRequest: true,
        reason: `digest uri ${JSON.stringify(p.uri ?? "")} does not match the Request-URI ${requestUris[0]}`,
      };
    if (!this.fresh(p.nonce as string, p.nc ?? "", now))
      return { ok: false, reason: "replayed request (nonce and count already used)", stale: true };
    return { ok: true, user: username };
  }

  /** Accept each (nonce, nc) once; forget nonces once they expire. */
  private fresh(nonce: string, nc: string, now: number): boolean {
    for (const [n, exp] of this.used) {
      if (exp >= now) continue;
      this.used.delete(n);
      this.seenNc.delete(n);
    }
    const seen = this.seenNc.get(nonce) ?? new Set<string>();
    if (seen.has(nc)) return false;
    seen.add(nc);
    this.seenNc.set(nonce, seen);
    this.used.set(nonce, now + this.ttl);
    return true;
  }
}

export interface DigestCredentialsLike {
  username: string;
  password: string;
  /** Answer only this realm's challenges. */
  realm?: string;
}

/**
 * Client side: the Authorization value answering one WWW-/Proxy-Authenticate challenge (SHA-256
 * or MD5, qop=auth or none), or undefined when the challenge is not one we may or can answer.
 */
export function digestAuthorization(
  challenge: string,
  method: string,
  uri: string,
  creds: DigestCredentialsLike,
  nc = 1,
): string | undefined {
  return answerDigest(parseDigestHeader(challenge), method, uri, creds, nc);
}

/** The same from an already parsed challenge (realm, nonce, algorithm, qop, opaque). */
export function answerDigest(
  c: Readonly<Record<string, string | undefined>>,
  method: string,
  uri: string,
  creds: DigestCredentialsLike,
  nc: number,
): string | undefined {
  if (creds.realm !== undefined && c.realm !== creds.realm) return undefined;
  const algorithm = (c.algorithm ?? "MD5").toUpperCase();
  if ((algorithm !== "MD5" && algorithm !== "SHA-256") || !c.realm || !c.nonce) return undefined;
  const qops = (c.qop ?? "").split(",").map((q) => q.trim());
  if (c.qop && !qops.includes("auth")) return undefined;
  const alg = algorithm as DigestAlgorithm;
  const ha1 = hash(alg, `${creds.username}:${c.realm}:${creds.password}`);
  const ha2 = hash(alg, `${method}:${uri}`);
  const count = nc.toString(16).padStart(8, "0");
  const cnonce = randomBytes(8).toString("hex");
  const response = c.qop
    ? hash(alg, `${ha1}:${c.nonce}:${count}:${cnonce}:auth:${ha2}`)
    : hash(alg, `${ha1}:${c.nonce}:${ha2}`);
  const params = [
    `algorithm=${algorithm}`,
    `username="${creds.username}"`,
    `realm="${c.realm}"`,
    `nonce="${c.nonce}"`,
    `uri="${uri}"`,
    `response="${response}"`,
  ];
  if (c.opaque) params.push(`opaque="${c.opaque}"`);
  if (c.qop) params.push("qop=auth", `cnonce="${cnonce}"`, `nc=${count}`);
  return `Digest ${params.join(", ")}`;
}

/** The first challenge we can answer among several (strongest first, as RFC 8760 servers list them). */
export function answerChallenges(
  challenges: string[],
  method: string,
  uri: string,
  creds: DigestCredentialsLike,
  nc = 1,
): string | undefined {
  const sorted = [...challenges].sort((a, b) => Number(/SHA-256/i.test(b)) - Number(/SHA-256/i.test(a)));
  for (const ch of sorted) {
    const auth = digestAuthorization(ch, method, uri, creds, nc);
    if (auth) return auth;
  }
  return undefined;
}
