/**
 * In-dialog progress for the destination (INFO, Info-Package sip-teleport-status): every state
 * change at once, progress at least once a second while anything moves. One INFO in flight at
 * a time (RFC 6086 ordering); what changes meanwhile is coalesced into the next one. During a
 * group's switchover statuses are held back (holdStatuses): the group's own INFOs must not wait
 * behind one, nor share the two cores with its parsing while the group is stopped.
 */
import type { MigrationProgress } from "../../lib/hypervisor/driver";
import type { Logger } from "../../lib/log/logger";
import type { Dialog, ResponseInfo } from "../../lib/sip/backend";
import { buildNrdl } from "../../nrdl";
import { NRDL_MIME, type VmStatus } from "../../nrdl/types";

export class StatusReporter {
  private readonly pending = new Map<string, VmStatus>();
  private readonly migrating = new Map<string, VmStatus>();
  private inFlight: Promise<void> = Promise.resolve();
  private sending = false;
  /** Requests (request()) waiting for their turn: they go before the next status INFO. */
  private requests = 0;
  private readonly ticker: NodeJS.Timeout;
  /** Statuses wait (holdStatuses) until this clears: released, or its time is up. */
  private held?: NodeJS.Timeout;

  constructor(
    private readonly dialog: Dialog,
    private readonly migrationId: string,
    /** The dialog's NRDL version: disk figures only from 2. */
    private readonly version: number,
    private readonly log: Logger,
  ) {
    this.ticker = setInterval(() => {
      for (const s of this.migrating.values()) this.pending.set(s.vm, s);
      this.flush();
    }, 1000);
  }

  progress(p: MigrationProgress): void {
    const cur = this.migrating.get(p.vm);
    // NRDL carries progress with at most 4 decimals
    const progress = Math.round(Math.min(1, Math.max(0, p.progress)) * 10000) / 10000;
    if (!cur) return;
    const next: VmStatus = { ...cur, progress, transferredBytes: p.transferredBytes };
    if (p.disk && this.version >= 2) {
      next.diskProgress = Math.round(Math.min(1, Math.max(0, p.disk.progress)) * 10000) / 10000;
      next.diskTransferredBytes = p.disk.transferredBytes;
      next.diskTotalBytes = p.disk.totalBytes;
    }
    this.migrating.set(p.vm, next);
  }

  state(s: VmStatus): void {
    if (s.state === "migrating") this.migrating.set(s.vm, s);
    else this.migrating.delete(s.vm);
    this.pending.set(s.vm, s);
    this.flush();
  }

  /**
   * Send an INFO of another kind (a post-copy recovery request) in turn with the status INFOs,
   * ahead of the next one; resolves with its answer, rejects on a non-2xx or a dead dialog.
   */
  async request(content: string): Promise<ResponseInfo> {
    this.requests++;
    try {
      while (this.sending) await this.inFlight;
      this.sending = true;
    } finally {
      this.requests--;
    }
    const answer = this.dialog.info({ contentType: NRDL_MIME, content });
    this.inFlight = answer
      .then(
        () => undefined,
        () => undefined,
      )
      .finally(() => {
        this.sending = false;
        this.flush();
      });
    return answer;
  }

  /** Send no status INFO until releaseStatuses(), or at most `maxMs`; request()s still go. */
  holdStatuses(maxMs = 5000): void {
    clearTimeout(this.held);
    this.held = setTimeout(() => this.releaseStatuses(), maxMs);
    this.held.unref();
  }

  releaseStatuses(): void {
    clearTimeout(this.held);
    this.held = undefined;
    this.flush();
  }

  private flush(): void {
    if (this.sending || this.requests > 0 || this.pending.size === 0 || this.held) return;
    const statuses = [...this.pending.values()];
    this.pending.clear();
    let content: string;
    try {
      content = buildNrdl({ version: this.version, id: this.migrationId, body: { kind: "status", statuses } });
    } catch (err) {
      // a status we cannot express is dropped, never allowed to stall the reporter
      this.log.error("cannot build INFO status", { error: String(err) });
      return;
    }
    this.sending = true;
    this.inFlight = this.dialog
      .info({ contentType: NRDL_MIME, content })
      .then(
        (res) => {
          if (res.status >= 300)
            this.log.warn("INFO refused by the destination", { status: res.status, reason: res.reason });
        },
        (err: unknown) => {
          this.log.warn("INFO failed", { error: String(err) });
        },
      )
      .finally(() => {
        this.sending = false;
        this.flush();
      });
  }

  /**
   * Stop ticking and wait until every queued status has been sent, but not longer than
   * `maxWaitMs`: an INFO lost to a dead peer would otherwise hold the BYE for Timer F (32 s).
   */
  async close(maxWaitMs = 3000): Promise<void> {
    clearInterval(this.ticker);
    this.releaseStatuses();
    const deadline = Date.now() + maxWaitMs;
    while ((this.sending || this.pending.size) && Date.now() < deadline) {
      this.flush();
      await Promise.race([
        this.inFlight,
        new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref()),
      ]);
    }
  }
}
