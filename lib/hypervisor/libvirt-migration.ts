/**
 * One outgoing libvirt live migration: `virsh migrate --live --p2p --persistent` (the stream on
 * its own connection, `--migrateuri`, or `--tunnelled`) to the destination's armed port, reached
 * through this agent's TLS-PSK tunnel (libvirt-tunnel.ts). Progress from `virsh domjobinfo`, abort
 * with `virsh domjobabort`, all through the URI's long-lived virsh session (virsh.ts); `migrate`
 * itself is a virsh process of its own. The move is done at the destination's Finish
 * (libvirt-finish-watch.ts; tunnelled: when virsh exits, figures from `domjobinfo --completed`).
 * libvirt itself keeps the VM on exactly one host: a failed or aborted migration resumes it on the
 * source, and the destination kills its incoming copy.
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
} from "./driver";
import { FinishWatch, type FinishStats } from "./libvirt-finish-watch";
import { openTunnel, type DataChannel, type TunnelClient } from "./libvirt-tunnel";
import type { JobInfo, Virsh } from "./virsh";

const PROGRESS_INTERVAL_MS = 500;
const HOLD_POLL_MS = 100;
/** Held for a switchover: 1 ms x 1 MiB/s is below one page, so pre-copy goes on (see QemuMigration). */
const HOLD_DOWNTIME_MS = 1;
const HOLD_MIB_PER_S = 1;
/** How long prime() lets a held VM send the rest of its first pass before stopping it anyway. */
const CATCH_UP_MS = 5000;
/** libvirt's bandwidth is in MiB/s; "unlimited" is far above any link. */
const UNLIMITED_MIB_PER_S = 1 << 20;

export interface LibvirtMigrationContext {
  vm: string;
  domain: string;
  virsh: Virsh;
  /** Private folder for the tunnel's Unix socket. */
  tunnelDir: string;
  /** Native migration: the stream on its own connection (`--migrateuri`); else tunnelled. */
  data?: DataChannel;
  /** Copied disks (native only): what libvirt mirrors, and the armed NBD port it reaches through this agent. */
  disks?: DiskCopy;
  log: Logger;
  settled(): void;
}

export interface DiskCopy {
  targets: string[];
  /** copy-top: only the overlay moves (`--copy-storage-inc`), onto the destination's own base. */
  incremental: boolean;
  /** The NBD server's URI libvirt is given (DataChannel.migrateUri of kind "nbd"). */
  disksUri: string;
  /** The armed NBD port and its secret; `path`: where this host's QEMU connects for it. */
  nbd: { host: string; port: number; secret: string; path: string };
}

function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** "tcp:HOST:PORT" or "tcp:[V6]:PORT" (the armed listener's URI). */
export function parseTcpUri(uri: string): { host: string; port: number } {
  const m = /^tcp:(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(uri);
  if (!m) throw new TeleportError(400, `not a migration listener URI: ${uri}`, ["expected tcp:HOST:PORT"]);
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

export class LibvirtMigration implements MigrationHandle {
  readonly done: Promise<MigrationResult>;
  readonly readyToSwitch: Promise<void>;
  /**
   * Settles once libvirt is done with the source's copy too (`virsh migrate` exited, the tunnel
   * closed): `done` may settle before, when the destination's Finish succeeded.
   */
  readonly gone: Promise<void>;
  phase: MigrationPhase = "setup";
  /** The virsh process's end and the tunnel's closing, after `done` (see FinishWatch). */
  private cleanup: Promise<void> = Promise.resolve();
  private resolveReady!: () => void;
  private rejectReady!: (err: Error) => void;
  private cancelReason: TeleportError | undefined;
  private abortRequested = false;
  private released = false;
  /** Pre-copy pass libvirt is in (domjobinfo "Iteration"). */
  private iteration = 0;
  /** When stop() suspended the VM (epoch ms): the group's pause starts here, not at libvirt's stop. */
  private stoppedAt: number | undefined;
  private held = false;
  private timer: NodeJS.Timeout | undefined;
  private bytes = { transferred: 0, remaining: 0, total: 0 };
  /** Copied disks: domjobinfo's "File processed" / "File total" (libvirt's disk counters). */
  private disk = { transferred: 0, total: 0 };
  private readonly mibPerS: number;
  private proc: ReturnType<Virsh["spawn"]> | undefined;

  constructor(
    private readonly ctx: LibvirtMigrationContext,
    private readonly target: MigrationTarget,
    private readonly opts: MigrationOptions,
  ) {
    this.mibPerS =
      opts.bandwidthMbps > 0 ? Math.max(1, Math.round((opts.bandwidthMbps * 1e6) / 8 / 2 ** 20)) : UNLIMITED_MIB_PER_S;
    this.readyToSwitch = quiet(
      new Promise<void>((resolve, reject) => {
        this.resolveReady = resolve;
        this.rejectReady = reject;
      }),
    );
    if (!opts.pauseBeforeSwitchover)
      this.rejectReady(new TeleportError(400, `migration of ${ctx.vm} was not asked to pause before switchover`));
    this.done = quiet(this.run().finally(() => clearTimeout(this.timer)));
    this.done.catch((err: Error) => this.rejectReady(err));
    this.gone = this.done
      .catch(() => undefined)
      .then(() => this.cleanup)
      .finally(() => ctx.settled());
  }

  /**
   * Lift a held migration's bandwidth and let the VM finish its first pass live (at most
   * CATCH_UP_MS; the 1 ms limit still keeps it from switching over unless it has next to nothing
   * dirty), so the group's stop has only the last dirty pages left.
   */
  async prime(): Promise<void> {
    if (this.phase === "completed" || this.released) return; // it converged on its own before it could be held
    if (!this.opts.pauseBeforeSwitchover || this.phase !== "active")
      throw new TeleportError(400, `VM ${this.ctx.vm} is not waiting for switchover (phase ${this.phase})`);
    this.released = true;
    this.armTimeout();
    await this.ctx.virsh.ask(["migrate-setspeed", this.ctx.domain, String(this.mibPerS)]).catch(() => undefined);
    const caughtUp = () => this.iteration >= 2 || this.bytes.remaining <= this.bytes.total / 32;
    for (const end = Date.now() + CATCH_UP_MS; this.phase === "active" && !caughtUp() && Date.now() < end;)
      await new Promise((r) => setTimeout(r, HOLD_POLL_MS / 2));
  }

  /**
   * Stop the VM for the group's switchover. libvirt has no pause-before-switchover (it never waits
   * between the stop and the last pages), so this suspends the VM here itself — libvirt allows
   * `suspend` during an outgoing migration — and restores the downtime limit: the group stops
   * together, as with QEMU, but each VM's rest is sent at once and it resumes at the destination
   * when that is done, not when the executor calls switchover().
   */
  async stop(): Promise<number> {
    if (this.stoppedAt !== undefined) return this.stoppedAt;
    if (!this.released) await this.prime();
    const { virsh, domain, vm, log } = this.ctx;
    if (this.phase !== "active") return Date.now(); // it switched over on its own meanwhile
    try {
      await virsh.ask(["suspend", domain]);
      this.stoppedAt = Date.now();
      log.info(`${vm} stopped for switchover`, { domain });
    } catch (err) {
      // it converged on its own meanwhile: nothing left to stop
      log.warn(`could not stop ${vm} for switchover`, { error: TeleportError.from(err).message });
    }
    // the limits follow unawaited: on a loaded host two more virsh calls per VM would spread the group's stops
    void this.setLimits(this.opts.downtimeLimitMs, this.mibPerS).catch((err: unknown) =>
      log.warn(`could not restore ${vm}'s migration limits`, { error: TeleportError.from(err).message }),
    );
    return this.stoppedAt ?? Date.now();
  }

  /** Stopped by stop() already, or now; resolves when the VM runs at the destination. */
  async switchover(): Promise<void> {
    if (this.stoppedAt === undefined) await this.stop();
    await this.done;
  }

  async abort(): Promise<void> {
    if (this.phase === "postcopy") {
      // cancelling now would lose the VM: it runs at the destination, and the source's copy is stale
      this.ctx.log.warn(`not aborting ${this.ctx.vm}: it is in post-copy and can only go forward`);
      return;
    }
    this.abortRequested = true;
    this.cancelReason ??= new TeleportError(487, `migration of ${this.ctx.vm} aborted`, [
      "the VM keeps running on the source",
    ]);
    if (this.proc) await this.jobAbort();
    await this.done.catch(() => undefined);
  }

  private async run(): Promise<MigrationResult> {
    const { vm, domain, virsh, log } = this.ctx;
    const started = Date.now();
    const st = await virsh.domState(domain);
    if (!st) throw new TeleportError(404, `VM ${vm}: libvirt at ${virsh.uri} does not define domain ${domain}`);
    if (st.state !== "running")
      throw new TeleportError(486, `VM ${vm} is ${st.state}, not running: nothing to migrate`);
    const { data, disks } = this.ctx;
    if (!data && (this.opts.convergence === "postcopy" || disks))
      throw new TeleportError(
        488,
        `VM ${vm}: a tunnelled libvirt migration cannot ${disks ? "copy disks" : "switch to post-copy"}`,
        [
          "libvirt combines neither post-copy nor --copy-storage-* with --tunnelled",
          'set libvirt.stream "native" in the source\'s configuration',
        ],
      );
    const { host, port } = parseTcpUri(this.target.uri);
    // the downtime limit is a per-domain setting libvirt applies to its next migration
    const holding = !!this.opts.pauseBeforeSwitchover;
    await virsh.ask(["migrate-setmaxdowntime", domain, String(holding ? HOLD_DOWNTIME_MS : this.opts.downtimeLimitMs)]);
    if (this.abortRequested) throw this.cancelReason;
    // native: the destination's Finish seen on the control connection is the arrival (libvirt-finish-watch.ts)
    const watch = data ? new FinishWatch() : undefined;
    const tunnel: TunnelClient = await openTunnel(host, port, this.target.secret, this.ctx.tunnelDir, {
      dataPath: data?.localPath,
      nbd: disks?.nbd,
      watch,
    });
    let polling = true;
    try {
      const args = ["migrate", "--live", "--p2p", "--persistent", "--bandwidth", String(this.mibPerS)];
      args.push(...(data ? ["--migrateuri", data.migrateUri] : ["--tunnelled"]));
      // auto-converge: QEMU throttles the vCPUs of a guest that outwrites the link
      if (this.opts.convergence === "auto-converge") args.push("--auto-converge");
      // post-copy allowed; poll() switches to it (migrate-postcopy) when pre-copy stops gaining
      if (this.opts.convergence === "postcopy") args.push("--postcopy");
      if (disks) {
        const copy = disks.incremental ? "--copy-storage-inc" : "--copy-storage-all";
        args.push(copy, "--migrate-disks", disks.targets.join(","), "--disks-uri", disks.disksUri);
      }
      args.push(domain, `qemu+unix:///system?socket=${tunnel.socket}`);
      this.proc = virsh.spawn(args);
      log.info(`migrating ${vm}`, {
        domain,
        to: this.target.uri,
        mibPerS: this.mibPerS,
        downtimeLimitMs: this.opts.downtimeLimitMs,
      });
      this.armTimeout();
      // one domjobinfo at a time: on a loaded host virsh outlasts the interval, and calls must not pile up
      void (async () => {
        while (polling) {
          await new Promise((r) => setTimeout(r, holding ? HOLD_POLL_MS : PROGRESS_INTERVAL_MS));
          if (polling) await this.poll();
        }
      })();
      const proc = this.proc;
      const first = await Promise.race([
        proc.then((r) => ({ r })),
        ...(watch ? [watch.finished.then((stats) => ({ stats, at: Date.now() }))] : []),
      ]);
      polling = false;
      if ("stats" in first) {
        // the VM runs at the destination; libvirt removes the source's copy meanwhile (Confirm)
        this.cleanup = proc.then(
          (r) => this.confirmed(r.exitCode, String(r.stderr)).finally(() => tunnel.close()),
          () => tunnel.close(),
        );
        return this.arrived(first.stats, started, first.at);
      }
      const { r } = first;
      const ended = Date.now();
      if (r.exitCode === 0) return await this.completed(started, ended);
      const aborted = this.abortRequested || this.cancelReason !== undefined;
      this.report(aborted ? "cancelled" : "failed");
      throw await this.failure(
        String(r.stderr)
          .replace(/^error: /gm, "")
          .trim(),
      );
    } catch (err) {
      await tunnel.close();
      throw err;
    } finally {
      polling = false;
    }
  }

  /** After an arrival seen at Finish: libvirt's Confirm ended; a failure there is only worth a warning. */
  private async confirmed(exitCode: number | undefined, stderr: string): Promise<void> {
    if (exitCode !== 0)
      this.ctx.log.warn(`virsh migrate of ${this.ctx.vm} failed after the destination's Finish`, {
        error: stderr.replace(/^error: /gm, "").trim(),
      });
  }

  /** The figures the source libvirtd sent with Finish3; downtime until its success came back. */
  private arrived(stats: FinishStats, started: number, at: number): MigrationResult {
    // the cookie's disk figure is QEMU's own block migration (0 with NBD); the mirror's is the last poll's
    const diskBytes = Math.max(stats.diskBytes ?? 0, this.disk.transferred);
    const result: MigrationResult = {
      vm: this.ctx.vm,
      totalMs: stats.timeElapsedMs ?? at - started,
      downtimeMs: Math.max(stats.downtimeMs ?? -1, stats.stoppedAt !== undefined ? at - stats.stoppedAt : -1),
      transferredBytes: (stats.memoryBytes ?? this.bytes.transferred) + (this.ctx.disks ? diskBytes : 0),
    };
    if (this.ctx.disks) {
      this.disk = { transferred: diskBytes, total: this.disk.total };
      result.diskTransferredBytes = diskBytes;
    }
    return this.conclude(result, at, this.bytes.total);
  }

  private async completed(started: number, ended: number): Promise<MigrationResult> {
    const info = await this.ctx.virsh.jobInfo(this.ctx.domain, true).catch(() => new Map() as JobInfo);
    const num = (k: string) => (typeof info.get(k) === "number" ? (info.get(k) as number) : undefined);
    const result: MigrationResult = {
      vm: this.ctx.vm,
      totalMs: num("Time elapsed") ?? ended - started,
      downtimeMs: num("Total downtime") ?? -1,
      transferredBytes: num("Data processed") ?? this.bytes.transferred,
    };
    if (this.ctx.disks) {
      this.disk = { transferred: num("File processed") ?? this.disk.transferred, total: num("File total") ?? 0 };
      result.diskTransferredBytes = this.disk.transferred;
    }
    return this.conclude(result, ended, num("Data total") ?? this.bytes.total);
  }

  private conclude(result: MigrationResult, ended: number, total: number): MigrationResult {
    if (this.stoppedAt !== undefined) {
      // libvirt counts downtime from its own stop; the VM stood still since our suspend
      result.stoppedAt = this.stoppedAt;
      result.downtimeMs = Math.max(result.downtimeMs, ended - this.stoppedAt);
    }
    this.bytes = { transferred: result.transferredBytes, remaining: 0, total };
    this.phase = "completed";
    this.resolveReady(); // a wave waiting to be held must not wait for a VM that already arrived
    this.report("completed");
    this.ctx.log.info(`migrated ${this.ctx.vm}`, { ...result });
    return result;
  }

  /** The VM must run on the source again (libvirt resumes it); say what happened. */
  private async failure(desc: string): Promise<TeleportError> {
    const { virsh, domain, vm } = this.ctx;
    let st = await virsh.domState(domain).catch(() => undefined);
    if (st?.state === "paused") {
      await virsh.ask(["resume", domain]).catch(() => undefined);
      st = await virsh.domState(domain).catch(() => undefined);
    }
    const where =
      st?.state === "running" ? "the VM keeps running on the source" : `the VM is ${st?.state} on the source`;
    if (this.cancelReason) return this.cancelReason;
    if (/Connection reset|End of file|Cannot recv|Broken pipe|unable to connect|handshake/i.test(desc))
      return new TeleportError(503, `migration of ${vm} to ${this.target.uri} failed: the armed peer closed`, [
        desc,
        where,
      ]);
    return new TeleportError(503, `migration of ${vm} to ${this.target.uri} failed`, [desc, where]);
  }

  private armTimeout(): void {
    clearTimeout(this.timer);
    if (!(this.opts.timeoutS > 0)) return;
    this.timer = setTimeout(() => {
      if (this.phase === "postcopy") return; // it can only go forward now
      this.cancelReason ??= new TeleportError(
        504,
        `migration of ${this.ctx.vm} timed out after ${this.opts.timeoutS} s and was cancelled`,
        ["the VM keeps running on the source"],
      );
      void this.jobAbort();
    }, this.opts.timeoutS * 1000);
  }

  private async jobAbort(): Promise<void> {
    await this.ctx.virsh.ask(["domjobabort", this.ctx.domain]).catch((err: unknown) => {
      this.ctx.log.warn(`domjobabort of ${this.ctx.vm} failed`, { error: TeleportError.from(err).message });
    });
  }

  private async setLimits(downtimeMs: number, mibPerS: number): Promise<void> {
    const { virsh, domain } = this.ctx;
    await virsh.ask(["migrate-setmaxdowntime", domain, String(downtimeMs)]);
    await virsh.ask(["migrate-setspeed", domain, String(mibPerS)]);
  }

  private async poll(): Promise<void> {
    let info: JobInfo;
    try {
      info = await this.ctx.virsh.jobInfo(this.ctx.domain);
    } catch {
      return; // the job just ended: run() reports that
    }
    const num = (k: string) => (typeof info.get(k) === "number" ? (info.get(k) as number) : 0);
    if (info.get("Job type") !== "Unbounded" || this.phase === "completed") return;
    if (this.phase !== "postcopy") this.phase = "active";
    this.bytes = { transferred: num("Data processed"), remaining: num("Data remaining"), total: num("Data total") };
    this.disk = { transferred: num("File processed"), total: num("File total") };
    this.iteration = num("Iteration");
    const nearlySent = this.iteration >= 2 || (this.bytes.total > 0 && this.bytes.remaining <= this.bytes.total / 4);
    if (this.opts.pauseBeforeSwitchover && !this.released && !this.held && nearlySent) {
      this.held = true;
      clearTimeout(this.timer); // waiting for the wave is not slowness
      await this.setLimits(HOLD_DOWNTIME_MS, HOLD_MIB_PER_S).catch(() => undefined);
      this.ctx.log.info(`${this.ctx.vm} held for switchover`, { remainingBytes: this.bytes.remaining });
      this.resolveReady();
    }
    // post-copy once pre-copy stops gaining (two passes after the first), as the QEMU driver does
    if (this.opts.convergence === "postcopy" && this.phase === "active" && this.iteration >= 3) await this.postcopy();
    this.report(this.phase);
  }

  /**
   * `virsh migrate-postcopy`: from now on the VM runs at the destination while its last pages
   * follow, so abort() and the timeout no longer cancel (that would lose the VM). libvirt has no
   * post-copy recovery through this driver: a link broken now leaves both halves paused (504).
   */
  private async postcopy(): Promise<void> {
    const { virsh, domain, vm, log } = this.ctx;
    log.info(`pre-copy of ${vm} does not converge: switching to post-copy`, { remainingBytes: this.bytes.remaining });
    this.phase = "postcopy";
    clearTimeout(this.timer);
    await virsh.ask(["migrate-postcopy", domain]).catch((err: unknown) => {
      this.phase = "active";
      this.armTimeout();
      log.warn(`libvirt refused post-copy for ${vm}; pre-copy goes on`, { error: TeleportError.from(err).message });
    });
  }

  private report(phase: MigrationPhase): void {
    const { transferred, remaining, total } = this.bytes;
    const progress = phase === "completed" ? 1 : total > 0 ? Math.min(1, Math.max(0, 1 - remaining / total)) : 0;
    const p: MigrationProgress = {
      vm: this.ctx.vm,
      phase,
      transferredBytes: transferred,
      remainingBytes: remaining,
      totalBytes: total,
      progress,
    };
    if (this.ctx.disks) {
      const { transferred: t, total: n } = this.disk;
      p.disk = {
        transferredBytes: t,
        totalBytes: n,
        progress: phase === "completed" ? 1 : n > 0 ? Math.min(1, t / n) : 0,
      };
    }
    try {
      this.opts.onProgress?.(p);
    } catch (err) {
      this.ctx.log.warn(`progress callback for ${this.ctx.vm} threw`, { error: TeleportError.from(err).message });
    }
  }
}
