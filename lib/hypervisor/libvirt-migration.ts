/**
 * One outgoing libvirt live migration: `virsh migrate --live --p2p --tunnelled --persistent` to
 * the destination's armed port, reached through this agent's TLS-PSK tunnel (libvirt-tunnel.ts).
 * Progress from `virsh domjobinfo`, abort with `virsh domjobabort`, final figures from
 * `domjobinfo --completed`, all through the URI's long-lived virsh session (virsh.ts); `migrate`
 * itself is a virsh process of its own. libvirt itself keeps the VM on exactly one host: a failed or aborted
 * migration resumes it on the source, and the destination kills its incoming copy.
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
  log: Logger;
  settled(): void;
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
  phase: MigrationPhase = "setup";
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
    this.done = quiet(
      this.run().finally(() => {
        clearTimeout(this.timer);
        ctx.settled();
      }),
    );
    this.done.catch((err: Error) => this.rejectReady(err));
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
    if (this.opts.convergence === "postcopy")
      throw new TeleportError(488, `VM ${vm}: the libvirt driver cannot switch to post-copy`, [
        "libvirt does not combine post-copy with tunnelled migration (the only kind the armed port carries)",
        'use convergence "auto-converge" or "none" for libvirt VMs',
      ]);
    const { host, port } = parseTcpUri(this.target.uri);
    // the downtime limit is a per-domain setting libvirt applies to its next migration
    const holding = !!this.opts.pauseBeforeSwitchover;
    await virsh.ask(["migrate-setmaxdowntime", domain, String(holding ? HOLD_DOWNTIME_MS : this.opts.downtimeLimitMs)]);
    if (this.abortRequested) throw this.cancelReason;
    const { data } = this.ctx;
    const tunnel: TunnelClient = await openTunnel(host, port, this.target.secret, this.ctx.tunnelDir, data?.localPath);
    let polling = true;
    try {
      const args = ["migrate", "--live", "--p2p", "--persistent", "--bandwidth", String(this.mibPerS)];
      args.push(...(data ? ["--migrateuri", data.migrateUri] : ["--tunnelled"]));
      // auto-converge: QEMU throttles the vCPUs of a guest that outwrites the link
      if (this.opts.convergence === "auto-converge") args.push("--auto-converge");
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
      const r = await this.proc;
      const ended = Date.now();
      polling = false;
      if (r.exitCode === 0) return await this.completed(started, ended);
      const aborted = this.abortRequested || this.cancelReason !== undefined;
      this.report(aborted ? "cancelled" : "failed");
      throw await this.failure(
        String(r.stderr)
          .replace(/^error: /gm, "")
          .trim(),
      );
    } finally {
      polling = false;
      await tunnel.close();
    }
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
    if (this.stoppedAt !== undefined) {
      // libvirt counts downtime from its own stop; the VM stood still since our suspend
      result.stoppedAt = this.stoppedAt;
      result.downtimeMs = Math.max(result.downtimeMs, ended - this.stoppedAt);
    }
    this.bytes = { transferred: result.transferredBytes, remaining: 0, total: num("Data total") ?? this.bytes.total };
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
    this.phase = "active";
    this.bytes = { transferred: num("Data processed"), remaining: num("Data remaining"), total: num("Data total") };
    this.iteration = num("Iteration");
    const nearlySent = this.iteration >= 2 || (this.bytes.total > 0 && this.bytes.remaining <= this.bytes.total / 4);
    if (this.opts.pauseBeforeSwitchover && !this.released && !this.held && nearlySent) {
      this.held = true;
      clearTimeout(this.timer); // waiting for the wave is not slowness
      await this.setLimits(HOLD_DOWNTIME_MS, HOLD_MIB_PER_S).catch(() => undefined);
      this.ctx.log.info(`${this.ctx.vm} held for switchover`, { remainingBytes: this.bytes.remaining });
      this.resolveReady();
    }
    this.report("active");
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
    try {
      this.opts.onProgress?.(p);
    } catch (err) {
      this.ctx.log.warn(`progress callback for ${this.ctx.vm} threw`, { error: TeleportError.from(err).message });
    }
  }
}
