/**
 * Who may use the console's API: only who shows the bearer token, on loopback too (every local
 * account reaches loopback, and the console moves VMs with the agent's rights). The token is
 * console.token of the config, else generated at each start and written where only the agent's
 * user reads it (tokenFile). Two browser-borne attacks are closed as well: a foreign page posting
 * forms (POSTs must be JSON, which a cross-origin page cannot send without a preflight we never
 * answer) and DNS rebinding (the Host header must name the address we are bound to).
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { isIP } from "node:net";

export function isLoopback(address: string): boolean {
  const a = address.replace(/^\[|\]$/g, "");
  return a === "localhost" || a === "::1" || (isIP(a) === 4 && a.startsWith("127."));
}

export interface AccessDecision {
  status: number;
  reason: string;
}

export class ApiAuth {
  /** The token the API requires. */
  readonly token: string;
  readonly generated: boolean;

  constructor(
    private readonly bindAddress: string,
    configured: string | undefined,
  ) {
    this.generated = !configured;
    this.token = configured ?? randomBytes(24).toString("base64url");
  }

  private tokenOf(req: IncomingMessage, url: URL): string | undefined {
    const header = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1];
    // EventSource cannot set headers: the page passes the token as a query parameter for /api/events.
    return header ?? url.searchParams.get("access_token") ?? undefined;
  }

  /** undefined when the request may go on, else the HTTP status and why. */
  check(req: IncomingMessage, url: URL): AccessDecision | undefined {
    if (isLoopback(this.bindAddress)) {
      const host = (req.headers.host ?? "").replace(/:\d+$/, "");
      if (!isLoopback(host))
        return { status: 421, reason: `this console answers to its loopback address, not to Host "${host}"` };
    }
    if (req.method === "POST" && !/^application\/json\b/i.test(req.headers["content-type"] ?? "")) {
      return { status: 415, reason: "POST bodies must be application/json" };
    }
    const given = this.tokenOf(req, url);
    if (!given) return { status: 401, reason: "this console requires a bearer token (Authorization: Bearer TOKEN)" };
    const a = Buffer.from(given);
    const b = Buffer.from(this.token);
    if (a.length !== b.length || !timingSafeEqual(a, b)) return { status: 401, reason: "wrong token" };
    return undefined;
  }
}
