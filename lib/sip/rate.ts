import type { Logger } from "../log/logger";

/**
 * INVITEs per second per source address (a token bucket each): a flood from one address gets
 * 503 with Retry-After instead of arming work, while other callers go on.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  /** `perSecond` tokens a second, bursts up to the same number (at least one). */
  constructor(private readonly perSecond: number) {}

  /** Takes a token for `key`; returns undefined when allowed, else the seconds to wait. */
  take(key: string, now = Date.now()): number | undefined {
    const burst = Math.max(1, this.perSecond);
    const b = this.buckets.get(key) ?? { tokens: burst, at: now };
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * this.perSecond);
    b.at = now;
    this.buckets.set(key, b);
    if (this.buckets.size > 10_000) this.prune(now);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return undefined;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.perSecond));
  }

  /** Forget addresses whose bucket has refilled: they are as good as new. */
  private prune(now: number): void {
    const burst = Math.max(1, this.perSecond);
    for (const [k, b] of this.buckets)
      if (b.tokens + ((now - b.at) / 1000) * this.perSecond >= burst) this.buckets.delete(k);
  }
}

/**
 * The stack's own INVITE limit, before the agent (and sip.js' parser) sees an INVITE: more than
 * `invitesPerSecond` new INVITEs from one address get 503 with Retry-After, answered as cheaply as
 * the backend can (the sip.js transport statelessly, drachtio before the app's INVITE handler).
 * Trusted proxies relay many callers and are exempt (the agent counts those per caller).
 * Refusals are logged as one summary a second: a flood must not become a log flood.
 */
export class InviteFloodGuard {
  private readonly rate?: RateLimiter;
  private refused = { count: 0, loggedAt: 0 };

  constructor(
    private readonly limits: { invitesPerSecond: number; trustedProxies: readonly string[] },
    private readonly logger: Logger,
  ) {
    if (limits.invitesPerSecond > 0) this.rate = new RateLimiter(limits.invitesPerSecond);
  }

  /** A new INVITE from `address`: undefined when it may go on, else the 503's Retry-After (s) and Warning text. */
  refuse(address: string): { retryAfterS: number; warning: string } | undefined {
    if (!this.rate || this.limits.trustedProxies.includes(address.replace(/^::ffff:/i, ""))) return undefined;
    const wait = this.rate.take(address);
    if (wait === undefined) return undefined;
    this.refused.count++;
    const now = Date.now();
    if (now - this.refused.loggedAt >= 1000) {
      this.logger.warn("INVITEs refused over the rate limit", {
        refused: this.refused.count,
        lastFrom: address,
        limitPerSecond: this.limits.invitesPerSecond,
      });
      this.refused = { count: 0, loggedAt: now };
    }
    const why = `more than ${this.limits.invitesPerSecond} INVITEs per second from ${address}`;
    return { retryAfterS: wait, warning: `Service Unavailable; ${why}` };
  }
}
