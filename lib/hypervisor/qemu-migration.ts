/**
 * One outgoing QEMU live migration, followed through MIGRATION events. Events, not query-migrate's
 * status: a QEMU that was itself a migration target keeps answering "completed" there during its
 * own later outgoing migration. query-migrate still gives the byte counters and, at the end,
 * QEMU's own total time and downtime. Whatever goes wrong, the VM keeps running on the source.
 * A VM with copied disks first mirrors them to the destination (qemu-mirror.ts); its memory moves
 * once they are in sync, and the mirrors are completed at the switchover with the VM stopped.
 */
import { TeleportError } from "../errors";
import type { Logger } from "../log/logger";
import type {
  MigrationHandle,
  MigrationOptions,
  MigrationPhase,
  MigrationProgress,
  MigrationResult,
  MigrationTarget,
  StreamReduction,
} from "./driver";
import type { QmpClient, QmpEvent } from "./qmp";
import { reductionCapabilities, reductionParameters } from "./qemu-compress";
import { DiskMirrors, type MirrorDisk } from "./qemu-mirror";
import { startDedupOutgoing, vetDedupMove } from "./qemu-dedup";
import type { SourceRelay } from "../dedup/relay";
import { dropMigrationSecret, useMigrationSecret } from "./qemu-tls";

export interface MigrationHooks {
  /** Open the VM's long-operation monitor (fails when the VM does not run here). */
  connect(): Promise<QmpClient>;
  /** Private folder for the moment the TLS key file exists; undefined for plain TCP. */
  pskDir: string | undefined;
  /** Private folder of the dedup relay's socket (SPEC.md 5.8), while it migrates with one. */
  dedupDir: string;
  /** Quit the source QEMU once the destination has everything. */
  quitSource(): Promise<void>;
  /** Called once, when `done` settles. */
  settled(): void;
  /** Copied disks to mirror before the memory, with their exports (throws when one has none). */
  disks(): MirrorDisk[];
}

interface QueryMigrate {
  status?: string;
  "total-time"?: number;
  downtime?: number;
  "error-desc"?: string;
  ram?: { transferred?: number; remaining?: number; total?: number; "dirty-sync-count"?: number };
}

/** QEMU leaves max-bandwidth at 128 MiB/s unless told; "unlimited" means far above any link. */
const UNLIMITED_BYTES_PER_S = 2 ** 40;
const PROGRESS_INTERVAL_MS = 500;
const HOLD_DOWNTIME_MS = 1;
const HOLD_BYTES_PER_S = 40_960;
/** How often a held migration asks whether its first full pass is done. */
const HOLD_POLL_MS = 100;
/** prime(): how often to look whether the migration thread woke up (QEMU re-decides once per 100 ms window). */
const PRIME_POLL_MS = 4;
/** prime(): a thread showing no sign of life within one 100 ms rate-limit window and a margin is not waited for. */
const PRIME_AWAKE_MS = 160;
/** prime(): bytes beyond the trickle's one page a window that show the thread sends at full speed. */
const PRIME_AWAKE_BYTES = 16_384;
/** prime(): at most this long for a held VM to send the rest of its first pass live before it is stopped. */
const PRIME_CATCH_UP_MS = 5000;
/** wake(): one 100 ms rate-limit window and a margin; polled often, the thread sends at once when it wakes. */
const WAKE_MS = 110;
const WAKE_POLL_MS = 2;
const PAGE = 4096;
/** stop(): how long QEMU may take to report the STOP of a `stop` it answered. */
const STOP_EVENT_WAIT_MS = 2000;
/** stop(): the least time from STOP to pre-switchover before the migration is cancelled (see boundDrain). */
const DRAIN_MIN_MS = 3000;
/** A cancelled migration leaves finish-migrate (where `cont` is refused) a moment after its event. */
const SETTLE_WAIT_MS = 3000;
/** Once the disks are in sync, their mirrors keep this share of the cap for the guest's new writes. */
const DISK_SHARE_IN_SYNC = 0.25;
/**
 * Post-copy with no byte sent for this long while pages remain: the link is gone. A dropped link
 * breaks no socket until TCP gives up (many minutes), so the source pauses the migration itself.
 */
const POSTCOPY_STALL_MS = 2000;
const RECOVER_WITHIN_S = 30;
/** Between two recovery attempts, and between looks at QEMU's state while one runs. */
const RECOVERY_RETRY_MS = 1000;
const RECOVERY_POLL_MS = 200;
/** How long a just-resumed migration may still read postcopy-paused before the attempt counts as failed. */
const RECOVERY_SETTLE_MS = 2000;

function phaseOf(status: string): MigrationPhase | undefined {
  switch (status) {
    case "setup":
    case "pre-switchover":
    case "device":
    case "completed":
    case "failed":
    case "cancelled":
      return status;
    case "active":
    case "wait-unplug":
      return "active";
    case "postcopy-active":
      return "postcopy";
    case "postcopy-paused":
    case "postcopy-recover":
      return status;
    case "cancelling":
      return "cancelled";
    default:
      return undefined;
  }
}

/** The guest's RAM, asked only for XBZRLE (its cache is sized from it). */
async function guestBytes(client: QmpClient, r: StreamReduction | undefined): Promise<number | undefined> {
  if (r?.method !== "xbzrle") return undefined;
  const q = await client.execute<{ "base-memory": number }>("query-memory-size-summary");
  return q["base-memory"];
}

/** Mark a promise handled (callers may never await it) while keeping it rejectable. */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** How long a completed dedup move waits for its relay to hand the destination the last bytes. */
const RELAY_DRAIN_MS = 10_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves with `p`'s outcome, or rejects after `ms`. */
function within<T>(p: Promise<T>, ms: number, why: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new TeleportError(504, why)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** A promise settled from outside, already marked handled. */
function signal(): { promise: Promise<void>; resolve(): void; reject(err: Error): void } {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = quiet(
    new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    }),
  );
  return { promise, resolve, reject };
}

export class QemuMigration implements MigrationHandle {
  readonly done: Promise<MigrationResult>;
  readonly readyToSwitch: Promise<void>;
  phase: MigrationPhase = "setup";
  private client: QmpClient | undefined;
  private readonly ready = signal();
  /** Stopped at pre-switchover: only the last pages and the device state are left to send. */
  private readonly waiting = signal();
  readonly atSwitchover: Promise<void> = this.waiting.promise;
  /** The VM stopped (QMP STOP, ours or QEMU's own at convergence). */
  private readonly halted = signal();
  /** Resolves with when the VM stopped at the source (by stop() or on its own), for the group's first STOP. */
  readonly stopped: Promise<number>;
  /** The destination has the VM (QEMU's "completed"). */
  private readonly arrived = signal();
  /** When the source stopped the VM (QMP STOP), epoch ms. */
  private stoppedAt: number | undefined;
  /** Why we cancelled, when we did (abort or timeout). */
  private cancelReason: TeleportError | undefined;
  private abortRequested = false;
  private timer: NodeJS.Timeout | undefined;
  private bytes = { transferred: 0, remaining: 0, total: 0 };
  private bytesPerS: number;
  /** prime() lifted the hold's bandwidth (the 1 ms downtime limit stays: only stop() ends pre-copy). */
  private primed = false;
  /** prime() caught it up and held it again: wake() lifts the cap for good. */
  private rehold = false;
  /** stop() was called: the VM is stopped by us, so QEMU will not restart it on a failure (vm_was_running). */
  private stopRequested = false;
  /** switchover() was called: from now on the device state may leave (migrate-continue). */
  private continued = false;
  /** When migrate-continue was sent (epoch ms). */
  private continuedAt: number | undefined;
  /** Bounds the drain from our STOP to pre-switchover (a dirty set the link cannot carry soon). */
  private drainTimer: NodeJS.Timeout | undefined;
  private held = false;
  /** migrate-start-postcopy was sent: from then on the VM's memory is on both hosts. */
  private postcopyStarted = false;
  /** QEMU's own words when it would not switch to post-copy. */
  private postcopyRefused: string | undefined;
  /** Post-copy's link watch: the byte count last seen moving, and when. */
  private lastMoved = { bytes: -1, at: 0 };
  /** migrate-pause was sent for the current stall. */
  private pausing = false;
  private recovering = false;
  /** Rejects when a broken post-copy could not be recovered in time: both halves stay paused. */
  private readonly stranded = signal();
  /** QOM id of this migration's TLS credentials (unique: a VM may leave, come back, leave again). */
  private readonly tlsId = `st-outgoing-${Date.now().toString(36)}`;
  private disks: MirrorDisk[] = [];
  private relay: SourceRelay | undefined;
  private mirrors: DiskMirrors | undefined;
  private disk: MigrationProgress["disk"];
  private diskBytes: number | undefined;
  /** Rejects when abort() or the timeout cancels: ends the wait for the disk mirrors. */
  private cancelled!: (err: TeleportError) => void;
  private readonly cancellation = quiet(
    new Promise<never>((_resolve, reject) => {
      this.cancelled = reject;
    }),
  );

  constructor(
    readonly vm: string,
    private readonly target: MigrationTarget,
    private readonly opts: MigrationOptions,
    private readonly hooks: MigrationHooks,
    private readonly log: Logger,
  ) {
    this.bytesPerS = opts.bandwidthMbps > 0 ? Math.floor((opts.bandwidthMbps * 1_000_000) / 8) : UNLIMITED_BYTES_PER_S;
    this.readyToSwitch = this.ready.promise;
    this.stopped = quiet(this.halted.promise.then(() => this.stoppedAt ?? Date.now()));
    if (!opts.pauseBeforeSwitchover)
      this.ready.reject(new TeleportError(400, `migration of ${vm} was not asked to pause before switchover`));
    this.done = quiet(
      this.run().finally(() => {
        clearTimeout(this.timer);
        clearTimeout(this.drainTimer);
        hooks.settled();
      }),
    );
    this.done.catch((err: Error) => {
      for (const s of [this.ready, this.waiting, this.halted, this.arrived]) s.reject(err);
    });
  }

  /**
   * A held migration sleeps out its 100 ms rate-limit windows at a trickle. Lift the bandwidth (the
   * 1 ms downtime limit stays, so QEMU still does not stop the VM unless next to nothing is dirty)
   * and wait until the thread is seen awake and, for one held before its first pass ended, until
   * that pass is sent live; then stop() finds it sending and the stopped VM has only its dirty set left.
   */
  async prime(): Promise<void> {
    const client = this.heldClient("prime");
    if (this.primed || this.phase !== "active" || this.stoppedAt !== undefined) return;
    this.primed = true;
    this.armTimeout();
    const before = await client.execute<QueryMigrate>("query-migrate");
    await client.execute("migrate-set-parameters", { "max-bandwidth": this.bytesPerS });
    const t0 = Date.now();
    const sent0 = before.ram?.transferred ?? 0;
    const sync0 = before.ram?.["dirty-sync-count"] ?? 0;
    for (;;) {
      await sleep(PRIME_POLL_MS);
      // stopped on its own (an idle guest converges at full bandwidth), failed, or at pre-switchover
      if (this.stoppedAt !== undefined || this.phase !== "active" || client.isClosed) return;
      const q = await client.execute<QueryMigrate>("query-migrate").catch(() => undefined);
      const ram = q?.ram ?? {};
      const sync = ram["dirty-sync-count"] ?? 0;
      const awake = (ram.transferred ?? 0) - sent0 > PRIME_AWAKE_BYTES || sync > sync0;
      const elapsed = Date.now() - t0;
      if (awake && sync >= 2) {
        // caught up: held again, so that it cannot converge (and stop) alone while the others catch up
        this.rehold = true;
        await client.execute("migrate-set-parameters", { "max-bandwidth": HOLD_BYTES_PER_S }).catch(() => undefined);
        return;
      }
      if ((!awake && elapsed > PRIME_AWAKE_MS) || elapsed > PRIME_CATCH_UP_MS) return;
    }
  }

  /**
   * After prime() held a caught-up VM again: lift the cap for good, and resolve once its migration
   * thread is awake (it wakes at its own window's end, within 100 ms), so that the group's stop
   * finds every thread sending, none asleep with its dirty set.
   */
  async wake(): Promise<void> {
    const client = this.client;
    if (!this.rehold || !client || this.stoppedAt !== undefined || this.phase !== "active") return;
    this.rehold = false;
    const before = await client.execute<QueryMigrate>("query-migrate");
    await client.execute("migrate-set-parameters", { "max-bandwidth": this.bytesPerS });
    const t0 = Date.now();
    const sent0 = before.ram?.transferred ?? 0;
    const sync0 = before.ram?.["dirty-sync-count"] ?? 0;
    while (Date.now() - t0 < WAKE_MS) {
      await sleep(WAKE_POLL_MS);
      if (this.stoppedAt !== undefined || this.phase !== "active" || client.isClosed) return;
      const ram = (await client.execute<QueryMigrate>("query-migrate").catch(() => undefined))?.ram ?? {};
      if ((ram.transferred ?? 0) - sent0 > 2 * PAGE || (ram["dirty-sync-count"] ?? 0) > sync0) return;
    }
  }

  /**
   * Stop the VM now (QMP stop: immediate, unlike QEMU's own decision at its window's end). The
   * migration thread then sends the dirty set and waits at pre-switchover. QEMU keeps
   * vm_was_running=false for a VM we stopped, so a failure leaves it paused: run() resumes it here
   * as long as switchover() was not called.
   */
  async stop(): Promise<number> {
    if (this.stoppedAt !== undefined) return this.stoppedAt;
    const client = this.heldClient("stop");
    if (!this.stopRequested) {
      this.stopRequested = true;
      if (this.opts.stopByQemu && this.phase === "active") {
        // QEMU stops it when what is left fits the downtime limit: the stored run state stays "running"
        this.primed = true;
        this.rehold = false;
        await client.execute("migrate-set-parameters", {
          "max-bandwidth": this.bytesPerS,
          "downtime-limit": Math.max(1, Math.round(this.opts.downtimeLimitMs)),
        });
      } else await client.execute("stop"); // a no-op when QEMU stopped it itself meanwhile
      if ((!this.primed || this.rehold) && this.phase === "active") {
        this.primed = true; // the dirty set must not drain at the hold's trickle
        this.rehold = false;
        await client.execute("migrate-set-parameters", { "max-bandwidth": this.bytesPerS });
      }
      this.boundDrain();
    }
    // QEMU's own stop comes when it converges: as long as the group's window
    const wait = this.opts.stopByQemu ? Math.max(3000, 10 * this.opts.downtimeLimitMs) : STOP_EVENT_WAIT_MS;
    await within(this.halted.promise, wait, `no STOP event from the source QEMU of ${this.vm}`);
    return this.stoppedAt ?? Date.now();
  }

  /** Send what is left of a VM stopped at pre-switchover (stopping it first if needed); resolves when completed. */
  async switchover(): Promise<void> {
    if (!this.continued) {
      if (this.stoppedAt === undefined && this.phase === "active") await this.stop();
      await this.waiting.promise;
      this.continued = true;
      clearTimeout(this.drainTimer);
      if (this.client) await this.continueSwitchover(this.client);
    }
    await this.arrived.promise;
  }

  /** The monitor of a migration held for a group switchover, or a 400 saying why it is not. */
  private heldClient(what: string): QmpClient {
    const client = this.client;
    if (!this.opts.pauseBeforeSwitchover || !client || !(this.phase === "active" || this.phase === "pre-switchover"))
      throw new TeleportError(400, `VM ${this.vm} is not waiting for switchover (phase ${this.phase}): cannot ${what}`);
    return client;
  }

  /**
   * A stopped VM whose dirty set does not reach pre-switchover soon (a writer the link cannot carry)
   * would make a long pause: cancel it before any device state left; it resumes here.
   */
  private boundDrain(): void {
    const ms = Math.max(DRAIN_MIN_MS, 10 * this.opts.downtimeLimitMs);
    this.drainTimer = setTimeout(() => {
      if (this.continued || this.phase !== "active") return;
      this.cancelReason ??= new TeleportError(504, `${this.vm} did not reach switchover within ${ms} ms of its stop`, [
        "its dirty memory did not fit the link in time; the migration was cancelled and the VM resumes on the source",
      ]);
      this.cancelled(this.cancelReason);
      void this.client?.execute("migrate_cancel").catch(() => undefined);
    }, ms);
  }

  async abort(): Promise<void> {
    if (this.postcopyStarted) {
      // cancelling now would lose the VM: it runs at the destination, and the source's copy is stale
      this.log.warn(`not aborting ${this.vm}: it is in post-copy and can only go forward`);
      return;
    }
    this.abortRequested = true;
    this.cancelReason ??= new TeleportError(487, `migration of ${this.vm} aborted`, [
      "the VM keeps running on the source",
    ]);
    this.cancelled(this.cancelReason);
    if (this.client && !this.client.isClosed) await this.client.execute("migrate_cancel").catch(() => undefined);
    await this.done.catch(() => undefined);
  }

  private async run(): Promise<MigrationResult> {
    const started = Date.now();
    const client = await this.hooks.connect();
    this.client = client;
    try {
      this.disks = this.hooks.disks();
      const { status } = await client.execute<{ status: string }>("query-status");
      if (status !== "running")
        throw new TeleportError(486, `VM ${this.vm} is ${status}, not running: nothing to migrate`);
      if (this.opts.dedup) vetDedupMove(this.vm, this.opts);
      const convergence = this.opts.convergence ?? "none";
      if (convergence === "postcopy" && this.opts.pauseBeforeSwitchover)
        throw new TeleportError(488, `convergence=postcopy cannot hold ${this.vm} for a group switchover`, [
          "a VM in post-copy runs at the destination at once; use auto-converge with strategy switchover",
        ]);
      await client.execute("migrate-set-capabilities", {
        capabilities: [
          { capability: "events", state: true },
          // the destination confirms it loaded the state before the source counts the move as done;
          // a destination that fails to load makes the migration fail and the source VM resume
          // (not through the dedup relays yet, where QEMU 7.2's SHUT never arrives: dedup moves are
          // group commits, whose source copy waits for the destination's word; see qemu-dedup.ts)
          { capability: "return-path", state: !this.opts.dedup },
          // copied disks: the mirrors are completed with the VM stopped, before its device state goes
          {
            capability: "pause-before-switchover",
            state: !!this.opts.pauseBeforeSwitchover || this.disks.length > 0,
          },
          { capability: "auto-converge", state: convergence === "auto-converge" },
          { capability: "postcopy-ram", state: convergence === "postcopy" },
          // the reduction the destination armed for (nrdl/SPEC.md 5.7); off for the plain stream
          ...reductionCapabilities(this.opts.compress, true),
        ],
      });
      const reduction = reductionParameters(this.opts.compress, await guestBytes(client, this.opts.compress));
      // Held for a coordinated switchover: QEMU stops a VM as soon as what is left fits in
      // bandwidth x downtime limit. A 1 ms limit during the first pass, and once every page was sent
      // a trickle of bandwidth, keep that product below one page, so the VM runs on in pre-copy
      // until switchover() restores both (0 ms would not do: QEMU 7.2 then stops the VM right after
      // the first pass). A guest that writes nothing at all may still converge early;
      // pause-before-switchover then stops it at the source until the wave is ready.
      const downtimeLimit = this.opts.pauseBeforeSwitchover ? HOLD_DOWNTIME_MS : this.opts.downtimeLimitMs;
      // A writer with idle time left is not slowed by a light throttle (QEMU starts at 20 %, +10 % a
      // pass): start at half and climb fast, so a guest that outwrites the link converges in a few passes.
      if (convergence === "auto-converge")
        await client.execute("migrate-set-parameters", { "cpu-throttle-initial": 50, "cpu-throttle-increment": 20 });
      await client.execute("migrate-set-parameters", {
        "max-bandwidth": this.bytesPerS,
        "downtime-limit": downtimeLimit,
        ...reduction,
        // post-copy has its own cap, unlimited unless told: the policy's cap holds there too
        ...(convergence === "postcopy" ? { "max-postcopy-bandwidth": this.bytesPerS } : {}),
      });
      // dedup: the relay does TLS, QEMU's own stream stays on this host
      if (this.hooks.pskDir && !this.opts.dedup)
        await useMigrationSecret(client, "client", this.tlsId, this.target.secret, this.hooks.pskDir);
      // a VM that arrived over TLS keeps its incoming tls-creds: clear them when this move is plain
      else await client.execute("migrate-set-parameters", { "tls-creds": "" });
      if (this.abortRequested) throw this.cancelReason;
      if (this.disks.length > 0) await this.mirrorDisks(client);
      if (this.abortRequested) throw this.cancelReason;
      const finished = this.followEvents(client);
      await client.execute("migrate", { uri: await this.streamUri() });
      if (this.abortRequested) await client.execute("migrate_cancel"); // abort() came while migrate was on its way
      this.log.info(`migrating ${this.vm}`, {
        uri: this.target.uri,
        compress: this.opts.compress?.method ?? "none",
        maxBandwidth: this.bytesPerS,
        downtimeLimitMs: this.opts.downtimeLimitMs,
      });
      this.armTimeout();
      const poller = setInterval(
        () => void this.pollProgress(client),
        this.opts.pauseBeforeSwitchover ? HOLD_POLL_MS : PROGRESS_INTERVAL_MS,
      );
      let outcome: string;
      try {
        outcome = await Promise.race([finished, this.stranded.promise.then(() => "failed")]);
      } finally {
        clearInterval(poller);
      }
      const q = await this.finalFigures(client, outcome);
      this.takeCounters(q);
      if (outcome !== "completed") {
        this.report(outcome === "cancelled" ? "cancelled" : "failed");
        if (this.hooks.pskDir) await dropMigrationSecret(client, this.tlsId);
        throw await this.failure(client, outcome, q);
      }
      const result: MigrationResult = {
        vm: this.vm,
        totalMs: q["total-time"] ?? Date.now() - started,
        downtimeMs: q.downtime ?? -1,
        transferredBytes: q.ram?.transferred ?? this.bytes.transferred,
      };
      if (this.stoppedAt !== undefined) result.stoppedAt = this.stoppedAt;
      if (this.continuedAt !== undefined) result.continuedAt = this.continuedAt;
      if (this.diskBytes !== undefined) result.diskTransferredBytes = this.diskBytes;
      await this.drainRelay();
      this.report("completed");
      await client.close();
      // group commit: the paused copy (postmigrate) waits for the destination's decision
      if (!this.opts.awaitCommit) await this.hooks.quitSource();
      this.log.info(`migrated ${this.vm}${this.opts.awaitCommit ? " (source copy kept paused)" : ""}`, { ...result });
      return result;
    } catch (err) {
      await this.mirrors?.abort();
      throw err;
    } finally {
      await client.close();
      await this.closeRelay();
    }
  }

  /** Where QEMU sends its stream: the destination, or with dedup the local relay to it. */
  private async streamUri(): Promise<string> {
    if (!this.opts.dedup) return this.target.uri;
    this.relay = await startDedupOutgoing(this.vm, this.opts.dedup, this.target, this.hooks.dedupDir);
    return this.relay.uri;
  }

  /**
   * QEMU completes once it wrote its last byte to the local relay, which may still hold some (the
   * deflater's, the link's queue): closing the relay then would cut the destination's stream. The
   * relay settles when the destination has it all (its QEMU closed) or the stream failed, which the
   * destination's decision then reports; bounded, as a dead link must not hold the move.
   */
  private async drainRelay(): Promise<void> {
    if (this.relay) await within(this.relay.done, RELAY_DRAIN_MS, "").catch(() => undefined);
  }

  private async closeRelay(): Promise<void> {
    if (!this.relay || !this.opts.dedup) return;
    const { fallback } = this.relay;
    await this.relay.close();
    this.relay = undefined;
    this.log.info(`dedup stream of ${this.vm} closed`, { ...this.opts.dedup.stats, fallback: fallback() });
  }

  /** Mirror every copied disk and wait until all are in sync, reporting progress meanwhile. */
  private async mirrorDisks(client: QmpClient): Promise<void> {
    const mirrors = new DiskMirrors(client, this.vm, this.disks, this.hooks.pskDir, this.log);
    this.mirrors = mirrors;
    this.phase = "disks";
    this.armTimeout();
    // a mirror that fails later (destination gone, its disk full) makes the memory migration pointless
    mirrors.onFailure = (err) => {
      this.cancelReason ??= err;
      this.cancelled(err);
      void client.execute("migrate_cancel").catch(() => undefined);
    };
    await mirrors.start(this.opts.bandwidthMbps > 0 ? this.bytesPerS : 0);
    const poller = setInterval(() => void this.pollDisks(), PROGRESS_INTERVAL_MS);
    try {
      this.report("disks");
      await Promise.race([mirrors.whenReady(), this.cancellation, client.closed.then(() => this.sourceGone())]);
    } catch (err) {
      if (this.cancelReason) throw this.cancelReason;
      throw err;
    } finally {
      clearInterval(poller);
    }
    await this.pollDisks();
    if (this.opts.bandwidthMbps > 0) {
      // in sync: the disks keep a quarter of the cap for new writes, the memory takes the rest
      await mirrors.setSpeed(this.bytesPerS * DISK_SHARE_IN_SYNC);
      this.bytesPerS = Math.floor(this.bytesPerS * (1 - DISK_SHARE_IN_SYNC));
      await client.execute("migrate-set-parameters", { "max-bandwidth": this.bytesPerS });
    }
    this.phase = "setup";
  }

  private sourceGone(): never {
    throw new TeleportError(500, `source QEMU of ${this.vm} went away during the migration`);
  }

  private async pollDisks(): Promise<void> {
    try {
      if (this.mirrors) this.disk = await this.mirrors.progress();
      if (this.phase === "disks") this.report("disks");
    } catch {
      // the connection is closing: the caller sees that
    }
  }

  /** Past pre-switchover with the VM stopped: the disks' last writes first, then the device state. */
  private async continueSwitchover(client: QmpClient): Promise<void> {
    try {
      if (this.mirrors) this.diskBytes = await this.mirrors.complete();
      await client.execute("migrate-continue", { state: "pre-switchover" });
      this.continuedAt = Date.now();
    } catch (err) {
      this.cancelReason ??= TeleportError.from(err);
      await client.execute("migrate_cancel").catch(() => undefined);
    }
  }

  /** Resolves with the terminal status (completed, failed, cancelled), or rejects if the source QEMU goes away. */
  private followEvents(client: QmpClient): Promise<string> {
    return new Promise((resolve, reject) => {
      const off = client.onEvent((ev: QmpEvent) => {
        if (ev.event === "STOP") {
          this.stoppedAt = ev.timestamp.seconds * 1000 + ev.timestamp.microseconds / 1000;
          this.halted.resolve();
        }
        if (ev.event !== "MIGRATION") return;
        const status = String(ev.data.status);
        const phase = phaseOf(status);
        if (!phase) return;
        this.phase = phase;
        // Terminal phases are reported by run() with QEMU's final counters.
        if (phase !== "completed" && phase !== "failed" && phase !== "cancelled") this.report(phase);
        if (status === "pre-switchover") {
          // disks only (no group switchover): the mirrors complete, then the migration goes on
          if (!this.opts.pauseBeforeSwitchover) void this.continueSwitchover(client);
          else {
            // converged before the group was ready: it waits stopped (a guest that writes nothing)
            if (!this.primed && !this.stopRequested) this.holding(client);
            clearTimeout(this.drainTimer);
            this.waiting.resolve();
          }
        }
        if (status === "postcopy-active") this.postcopyStarted = true;
        if (status === "postcopy-paused") void this.recoverPostcopy(client);
        if (status === "completed") this.arrived.resolve();
        if (status === "completed" || status === "failed" || status === "cancelled") {
          off();
          resolve(status);
        }
      });
      void client.closed.then(() => {
        off();
        reject(new TeleportError(500, `source QEMU of ${this.vm} went away during the migration`));
      });
    });
  }

  private armTimeout(): void {
    clearTimeout(this.timer);
    if (!(this.opts.timeoutS > 0)) return;
    this.timer = setTimeout(() => {
      // cancelling in post-copy would lose the VM: its memory is split between the two hosts
      if (this.postcopyStarted) return;
      this.cancelReason ??= new TeleportError(
        504,
        `migration of ${this.vm} timed out after ${this.opts.timeoutS} s and was cancelled`,
        [
          "QEMU does not give up on a migration that does not converge; the VM keeps running on the source",
          ...(this.postcopyRefused ? [`post-copy was refused: ${this.postcopyRefused}`] : []),
        ],
      );
      this.cancelled(this.cancelReason);
      void this.client?.execute("migrate_cancel").catch(() => undefined);
    }, this.opts.timeoutS * 1000);
  }

  /** Pre-copy is as far as it goes without switching over: tell the wave. */
  private holding(client: QmpClient): void {
    if (this.held) return;
    this.held = true;
    clearTimeout(this.timer); // waiting for the wave's switchover is not slowness
    if (this.phase === "active")
      void client.execute("migrate-set-parameters", { "max-bandwidth": HOLD_BYTES_PER_S }).catch(() => undefined);
    this.ready.resolve();
  }

  private async pollProgress(client: QmpClient): Promise<void> {
    try {
      const q = await client.execute<QueryMigrate>("query-migrate");
      this.takeCounters(q);
      // Hold before the first pass ends (a quarter left, or the second dirty sync began): a guest
      // that writes little would otherwise converge at the first sync, between two polls.
      const ram = q.ram ?? {};
      const nearlySent =
        (ram["dirty-sync-count"] ?? 0) >= 2 ||
        ((ram.total ?? 0) > 0 && (ram.remaining ?? Infinity) <= (ram.total ?? 0) / 4);
      const releasing = this.primed || this.stopRequested;
      if (this.opts.pauseBeforeSwitchover && !releasing && this.phase === "active" && nearlySent) this.holding(client);
      // Post-copy once pre-copy stops gaining: two passes after the first and still not converged.
      const stuck = (ram["dirty-sync-count"] ?? 0) >= 3;
      if (this.opts.convergence === "postcopy" && !this.postcopyStarted && !this.postcopyRefused && stuck) {
        this.postcopyStarted = true;
        this.log.info(`pre-copy of ${this.vm} does not converge: switching to post-copy`, {
          remainingBytes: ram.remaining,
        });
        await client.execute("migrate-start-postcopy").catch((err: unknown) => {
          this.postcopyRefused = TeleportError.from(err).message;
          this.postcopyStarted = false;
          this.log.warn(`QEMU refused post-copy for ${this.vm}; pre-copy goes on`, { error: this.postcopyRefused });
        });
      }
      if (this.phase === "postcopy") await this.watchPostcopyLink(client, q);
      if (this.mirrors) this.disk = await this.mirrors.progress();
      this.report(this.phase);
    } catch {
      // the connection is closing: the event follower reports that
    }
  }

  /**
   * In post-copy, bytes that stop moving while pages remain mean the link is gone: pause the
   * migration (QEMU then shuts its socket and goes to postcopy-paused, whence it can recover).
   */
  private async watchPostcopyLink(client: QmpClient, q: QueryMigrate): Promise<void> {
    const bytes = q.ram?.transferred ?? 0;
    const now = Date.now();
    if (bytes !== this.lastMoved.bytes || (q.ram?.remaining ?? 0) === 0) {
      this.lastMoved = { bytes, at: now };
      return;
    }
    if (this.pausing || now - this.lastMoved.at < POSTCOPY_STALL_MS) return;
    this.pausing = true;
    this.log.warn(`post-copy of ${this.vm} stalled for ${now - this.lastMoved.at} ms: pausing it to recover`, {
      remainingBytes: q.ram?.remaining,
    });
    await client.execute("migrate-pause").catch((err: unknown) => {
      this.pausing = false; // it paused itself meanwhile, or QEMU refused: the next stall tries again
      this.log.warn(`migrate-pause of ${this.vm} refused`, { error: TeleportError.from(err).message });
    });
  }

  /**
   * QEMU's postcopy recovery, driven from here: ask the destination (through `opts.recover`, over
   * SIP) for a new listener and secret, then resume the migration there. Tried again until the
   * deadline; after it, both halves stay paused (neither may run alone) and `done` rejects.
   */
  private async recoverPostcopy(client: QmpClient): Promise<void> {
    if (this.recovering) return;
    this.recovering = true;
    const withinS = this.opts.recoverWithinS ?? RECOVER_WITHIN_S;
    const deadline = Date.now() + withinS * 1000;
    this.log.warn(`post-copy link of ${this.vm} broke: recovering (at most ${withinS} s)`);
    let lastError = "no attempt finished";
    try {
      for (let attempt = 1; Date.now() < deadline; attempt++) {
        if (client.isClosed) return; // the source QEMU is gone: `done` says so
        try {
          // An earlier attempt may have resumed after all: asking the destination again would make it
          // pause a stream that runs.
          const current = attempt > 1 ? await this.recoveryOutcome(client, deadline) : "postcopy-paused";
          if (current === "postcopy-active" || current === "completed") return this.recovered(attempt);
          if (!this.opts.recover) throw new TeleportError(501, "no way to ask the destination for a new listener");
          const target = await within(
            this.opts.recover(this.vm),
            deadline - Date.now(),
            "the destination did not answer in time",
          );
          if (this.hooks.pskDir)
            await useMigrationSecret(client, "client", `${this.tlsId}-r${attempt}`, target.secret, this.hooks.pskDir);
          await client.execute("migrate", { uri: target.uri, resume: true });
          this.log.info(`resuming post-copy of ${this.vm}`, { uri: target.uri, attempt });
          const status = await this.recoveryOutcome(client, deadline, Date.now() + RECOVERY_SETTLE_MS);
          if (status === "postcopy-active" || status === "completed") return this.recovered(attempt);
          lastError = `QEMU is ${status} after resuming`;
        } catch (err) {
          lastError = TeleportError.from(err).message;
          this.log.warn(`post-copy recovery attempt ${attempt} for ${this.vm} failed`, { error: lastError });
        }
        await sleep(Math.max(0, Math.min(RECOVERY_RETRY_MS, deadline - Date.now())));
      }
      this.stranded.reject(
        new TeleportError(504, `post-copy of ${this.vm} could not be recovered within ${withinS} s`, [
          "its memory is split: the destination holds the running state, this host the pages not sent yet",
          "both halves stay paused and are kept; neither may be stopped or started alone",
          "restore the link, then resume by hand: QMP migrate-recover on the destination, migrate with " +
            "resume=true on the source (docs/operators.md, post-copy recovery)",
          `last attempt: ${lastError}`,
        ]),
      );
    } finally {
      this.recovering = false;
    }
  }

  /** After `migrate resume`: QEMU's status once it has left postcopy-recover (or at the deadline). */
  private recovered(attempt: number): void {
    this.pausing = false;
    this.lastMoved = { bytes: -1, at: Date.now() };
    this.log.info(`post-copy of ${this.vm} recovered`, { attempt });
  }

  /**
   * Where a resume went: postcopy-recover is still under way. Right after `migrate resume` QEMU may
   * still say postcopy-paused for a moment; until `settleUntil` only a pause seen after the recovery
   * began counts as a failed attempt.
   */
  private async recoveryOutcome(client: QmpClient, deadline: number, settleUntil = 0): Promise<string> {
    let began = false;
    for (;;) {
      const { status = "unknown" } = await client.execute<QueryMigrate>("query-migrate");
      if (status === "postcopy-recover") began = true;
      const settling = status === "postcopy-paused" && !began && Date.now() < settleUntil;
      if (!(status === "postcopy-recover" || settling) || Date.now() >= deadline) return status;
      await sleep(RECOVERY_POLL_MS);
    }
  }

  /**
   * QEMU sends "completed" a moment before it stores total-time (migration_iteration_finish),
   * so ask until the figure is there.
   */
  private async finalFigures(client: QmpClient, outcome: string): Promise<QueryMigrate> {
    for (let i = 0; ; i++) {
      const q = await client.execute<QueryMigrate>("query-migrate");
      if (outcome !== "completed" || (q["total-time"] ?? 0) > 0 || i >= 40) return q;
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  private takeCounters(q: QueryMigrate): void {
    if (q.ram)
      this.bytes = { transferred: q.ram.transferred ?? 0, remaining: q.ram.remaining ?? 0, total: q.ram.total ?? 0 };
  }

  private report(phase: MigrationPhase): void {
    const { transferred, remaining, total } = this.bytes;
    const progress = phase === "completed" ? 1 : total > 0 ? Math.min(1, Math.max(0, 1 - remaining / total)) : 0;
    const p: MigrationProgress = {
      vm: this.vm,
      phase,
      transferredBytes: transferred,
      remainingBytes: remaining,
      totalBytes: total,
      progress,
    };
    if (this.disk) p.disk = phase === "completed" ? { ...this.disk, progress: 1 } : this.disk;
    try {
      this.opts.onProgress?.(p);
    } catch (err) {
      this.log.warn(`progress callback for ${this.vm} threw`, { error: TeleportError.from(err).message });
    }
  }

  /** The run state once QEMU has left finish-migrate (migration_iteration_finish runs after the event). */
  private async settledStatus(client: QmpClient): Promise<string> {
    for (const end = Date.now() + SETTLE_WAIT_MS; ; await sleep(20)) {
      const { status } = await client.execute<{ status: string }>("query-status");
      if (status !== "finish-migrate" || Date.now() > end) return status;
    }
  }

  /** Make sure the VM runs on the source again (unless the group decides), then say what happened. */
  private async failure(client: QmpClient, outcome: string, q: QueryMigrate): Promise<TeleportError> {
    if (this.postcopyStarted)
      // the destination ran the VM: the source's copy is stale and must never run again
      return new TeleportError(500, `post-copy of ${this.vm} failed after the switch: the VM is lost`, [
        q["error-desc"] ?? `migration ${outcome}`,
        "the source's copy is stale and stays stopped; restore the VM from a backup",
      ]);
    if (this.opts.awaitCommit && this.continued)
      // its device state may have left: only the group's decision may run it here again
      return new TeleportError(
        503,
        `migration of ${this.vm} failed after its switchover: ${q["error-desc"] ?? outcome}`,
        ["the VM stays paused on the source until the group's decision"],
      );
    let status = await this.settledStatus(client);
    if (status !== "running" && status !== "shutdown") {
      // QEMU restarts a VM that was running when the migration failed, not one we stopped (stop()): run it
      await client.execute("cont").catch(() => undefined);
      ({ status } = await client.execute<{ status: string }>("query-status"));
    }
    const where = status === "running" ? "the VM keeps running on the source" : `the VM is ${status} on the source`;
    if (this.cancelReason) return this.cancelReason;
    const desc = q["error-desc"] ?? `migration ${outcome}`;
    if (/refused|No route|unreachable|Name or service/i.test(desc) && this.bytes.transferred === 0)
      return new TeleportError(503, `no migration listener for ${this.vm} at ${this.target.uri}`, [desc, where]);
    return new TeleportError(503, `migration of ${this.vm} to ${this.target.uri} failed: ${desc}`, [where]);
  }
}
