/**
 * RFC 3261 reliability over UDP that the sip.js core leaves out (its Timers A/E/G are TODO
 * and J is 0): request retransmission, Timer G for non-2xx INVITE answers, and a cache of
 * final responses replayed when the peer retransmits a request we have already answered.
 * Live retransmission timers are capped (`maxTimers`): a flood must not grow them without end.
 * Stateless refusals never come here (transport.ts `sendStateless`).
 */
export interface ReliabilityTimers {
  t1: number;
  t2: number;
}

export const DEFAULT_TIMERS: ReliabilityTimers = { t1: 500, t2: 4000 };

/** Live retransmissions (ours and Timer G's) held at once by default: far above any real load. */
export const DEFAULT_MAX_TIMERS = 4096;

interface Retransmission {
  timer: NodeJS.Timeout;
  interval: number;
  deadline: number;
  resend: () => void;
  /** INVITE stops at the first response; non-INVITE keeps going at T2 after a provisional. */
  invite: boolean;
}

interface CachedResponse {
  resend: () => void;
  expires: number;
}

const keyOf = (branch: string, method: string): string => `${branch} ${method}`;

export class UdpReliability {
  private readonly requests = new Map<string, Retransmission>();
  /** Non-2xx INVITE answers waiting for their ACK (Timer G). */
  private readonly unacked = new Map<string, Retransmission>();
  private readonly answered = new Map<string, CachedResponse>();
  private sweeper?: NodeJS.Timeout;

  constructor(
    private readonly timers: ReliabilityTimers = DEFAULT_TIMERS,
    private readonly maxTimers = DEFAULT_MAX_TIMERS,
  ) {}

  /** Retransmission timers running now. */
  get live(): number {
    return this.requests.size + this.unacked.size;
  }

  /** At the cap: new INVITEs are refused statelessly (transport.ts) rather than given a timer. */
  get saturated(): boolean {
    return this.live >= this.maxTimers;
  }

  /** We sent a request over UDP: retransmit it until a response arrives (ACK is never retransmitted). */
  requestSent(branch: string, method: string, resend: () => void): void {
    if (method === "ACK") return;
    const key = keyOf(branch, method);
    if (this.requests.has(key)) return; // the core re-sends nothing itself; a repeat is our own retransmission
    this.schedule(this.requests, key, resend, method === "INVITE");
  }

  /** A response arrived for one of our requests. */
  responseReceived(branch: string, method: string, status: number): void {
    const key = keyOf(branch, method);
    const r = this.requests.get(key);
    if (!r) return;
    if (r.invite || status >= 200) {
      clearTimeout(r.timer);
      this.requests.delete(key);
    } else {
      // Timer E after a provisional: keep retransmitting at T2 until the final answer.
      r.interval = this.timers.t2;
    }
  }

  /** We sent a response: remember finals so a retransmitted request gets the same answer. */
  responseSent(branch: string, method: string, status: number, resend: () => void): void {
    if (status < 200) return;
    const key = keyOf(branch, method);
    // 2xx to INVITE is retransmitted by the core's dialog until ACK; a re-sent INVITE is absorbed there.
    if (method === "INVITE" && status < 300) return;
    this.answered.set(key, { resend, expires: Date.now() + 64 * this.timers.t1 });
    if (method === "INVITE" && !this.unacked.has(key)) this.schedule(this.unacked, key, resend, false);
    this.sweeper ??= setInterval(() => this.sweep(), 8 * this.timers.t1).unref();
  }

  /**
   * A request arrived: true when it is a retransmission we have answered already (the cached
   * answer has been re-sent and the request must not reach the core again).
   */
  requestReceived(branch: string, method: string): boolean {
    if (method === "ACK") {
      const r = this.unacked.get(keyOf(branch, "INVITE"));
      if (r) {
        clearTimeout(r.timer);
        this.unacked.delete(keyOf(branch, "INVITE"));
        return true; // ACK to a non-2xx answer belongs to the transaction layer only
      }
      return false;
    }
    const cached = this.answered.get(keyOf(branch, method));
    if (!cached) return false;
    cached.resend();
    return true;
  }

  stop(): void {
    for (const r of [...this.requests.values(), ...this.unacked.values()]) clearTimeout(r.timer);
    this.requests.clear();
    this.unacked.clear();
    this.answered.clear();
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  private schedule(table: Map<string, Retransmission>, key: string, resend: () => void, invite: boolean): void {
    if (this.saturated) return; // sent once; the peer's own retransmissions (or our Timer B/F) recover
    const { t1, t2 } = this.timers;
    const r: Retransmission = {
      interval: t1,
      deadline: Date.now() + 64 * t1,
      resend,
      invite,
      timer: undefined as unknown as NodeJS.Timeout,
    };
    const fire = (): void => {
      if (Date.now() >= r.deadline) {
        table.delete(key); // Timer B/F/H in the core reports the failure
        return;
      }
      r.resend();
      r.interval = invite ? r.interval * 2 : Math.min(r.interval * 2, t2);
      r.timer = setTimeout(fire, r.interval);
    };
    r.timer = setTimeout(fire, r.interval);
    table.set(key, r);
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, v] of this.answered) if (v.expires <= now) this.answered.delete(k);
    if (this.answered.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}
