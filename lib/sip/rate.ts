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
