/**
 * QEMU through QMP. Each VM is a daemonized QEMU with a pidfile, a serial log and two QMP sockets
 * in the host's run directory: `NAME.qmp` for operations that need the monitor for a while
 * (arming, migrating) and `NAME.mon` for short queries, so `sip-teleport vm status` works while
 * an agent migrates. The run directory is the only state: a new driver (an agent restart) finds
 * its VMs again from the pidfiles. Two drivers with different run directories and identical
 * definitions act as two hosts on one machine.
 */
import fs from "node:fs";
import path from "node:path";
import execa from "execa";
import { TeleportError } from "../errors";
import { silentLogger, type Logger } from "../log/logger";
import { chooseAccel, type AccelChoice } from "./accel";
import { ExecutableProbe } from "./executable";
import type {
  ArmedListener,
  ArmOptions,
  HypervisorDriver,
  MigrationHandle,
  MigrationOptions,
  MigrationTarget,
  RecoveryOptions,
  SettleOptions,
  VmDefinition,
  VmRunState,
} from "./driver";
import type { DiskExport, DiskSpec } from "../../nrdl/types";
import { CreatedImages, diskArgs, diskNode, isCopied, vetIncomingDisks } from "./qemu-disks";
import { QEMU_COMPRESSION, reductionCapabilities, reductionParameters } from "./qemu-compress";
import { QemuMigration, type MigrationHooks } from "./qemu-migration";
import { dropOrphanedMirrors, type MirrorDisk } from "./qemu-mirror";
import { bindWithRetry, tcpUri } from "./net";
import { HostAnnouncer } from "../net/host-announcer";
import { livePid, terminate, waitExit } from "./pidfile";
import { QmpClient, type QmpConnectOptions } from "./qmp";
import { connectOnCreate, type EarlyQmp } from "./qmp-early";
import { listenDedupIncoming, vetDedup } from "./qemu-dedup";
import type { DestinationRelay } from "../dedup/relay";
import { addPskCredentials, useServerKeyDir, writeKeyDir, writeServerKeyDir } from "./qemu-tls";

export interface QemuDriverOptions {
  /** This host's run directory (pidfiles, QMP sockets, serial logs). Created when missing. */
  runDir: string;
  inventory: VmDefinition[];
  logger?: Logger;
  /** Default "qemu-system-x86_64" from PATH. */
  qemuBinary?: string;
  /** Default: chooseAccel() (KVM only where it really works). */
  accel?: AccelChoice;
  /** How long start() waits for QEMU to report "running" (default 10 s). */
  startTimeoutMs?: number;
  /**
   * Protect migration streams with TLS-PSK from the one-time secret (default true). Both hosts
   * must agree. Plain TCP is much faster under TCG (see bench:driver) and is for trusted links.
   */
  migrationTls?: boolean;
  /**
   * Under TCG, give each VM 8 KiB more RAM than defined so QEMU < 9.0 cannot lose guest writes
   * during a migration (see tcgSafeMemory). Default true; false only to measure the fault.
   */
  tcgDirtyWorkaround?: boolean;
}

/**
 * The -m value. QEMU before 9.0 (fixed by commit 03bfc2188f, "physmem: Fix migration dirty
 * bitmap coherency with TCG memory access") corrupts TCG guests in migration: when the RAM size
 * is a multiple of 256 KiB its fast dirty-bitmap sync clears the bits without re-arming TCG's
 * write tracking, so pages the guest writes again are never resent. 8 KiB more (QEMU's RAM
 * granularity) sends every sync down the per-page path, which re-arms it. Both ends pad alike;
 * a TCG host and a KVM host therefore cannot migrate to each other (QEMU refuses cleanly).
 */
export function tcgSafeMemory(memoryMib: number, accel: AccelChoice["accel"], workaround: boolean): string {
  return accel === "tcg" && workaround ? `${memoryMib * 1024 + 8}k` : `${memoryMib}M`;
}

/** announce-self: a RARP per NIC at once and twice more, 50 ms apart (QEMU's migration default is 5 rounds). */
const ANNOUNCE = { initial: 0, max: 100, rounds: 3, step: 50 };

/** Longest Unix socket path Linux accepts (sun_path is 108 bytes with the terminating NUL). */
const MAX_SOCKET_PATH = 107;

export interface VmFiles {
  pid: string;
  /** Monitor for long operations (arm, migrate). */
  qmp: string;
  /** Monitor for short queries (state, stop). */
  mon: string;
  serial: string;
  /** Private folders for the migration key (incoming: until the VM arrives; outgoing: moments). */
  pskIn: string;
  pskOut: string;
  /** The NBD server's key (incoming copied disks, until the VM arrives). */
  pskNbd: string;
  /** Images an arming created for copied disks, deleted if the VM does not arrive. */
  createdImages: string;
  /** Group page dedup: the incoming QEMU's local socket, the outgoing relay's private folder. */
  dedupIn: string;
  dedupOut: string;
  /**
   * Marker: armed with holdOnArrival (QEMU -S); an arrival waits paused for the group's decision.
   * On disk like the pidfile, so a restarted agent tells an arrived VM from one paused otherwise.
   */
  hold: string;
}

interface Listener {
  uri: string;
  client: QmpClient;
  /** Armed for post-copy: its monitor negotiated out-of-band commands, for a recovery. */
  postcopy: boolean;
  /** The incoming migration's status, from its MIGRATION events (never asked: see keepPostcopyHalf). */
  status: string;
}

/** QEMU run states (query-status "status") in the driver's words. */
function runState(status: string): VmRunState {
  switch (status) {
    case "running":
      return "running";
    case "inmigrate":
      return "incoming";
    case "postmigrate":
    case "shutdown":
    case "internal-error":
    case "guest-panicked":
      return "stopped";
    default:
      return "paused";
  }
}

/** Cancel an outgoing migration and wait until QEMU says it is over (at most 5 s). */
async function cancelMigration(mon: QmpClient): Promise<void> {
  await mon.execute("migrate_cancel");
  for (let i = 0; i < 100; i++) {
    const { status } = await mon.execute<{ status?: string }>("query-migrate");
    if (status === "cancelled" || status === "failed" || status === "completed") return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new TeleportError(504, "the migration did not end within 5 s of migrate_cancel");
}

/** An incoming VM in post-copy here: its out-of-band monitor, its migration status, its recovery listener. */
interface PostcopyHalf {
  client: QmpClient;
  status: string;
  recoverUri?: string;
}

export class QemuDriver implements HypervisorDriver {
  readonly kind = "qemu" as const;
  /** zstd, zlib (multifd) and XBZRLE, QEMU 7.2's own (nrdl/SPEC.md 5.7). */
  readonly compression = QEMU_COMPRESSION;
  readonly dedup = true;
  /** Dedup relays of incoming VMs, until the VM arrived or its listener went. */
  private readonly relays = new Map<string, DestinationRelay>();
  readonly runDir: string;
  private readonly defs: Map<string, VmDefinition>;
  private readonly log: Logger;
  private readonly qemu: string;
  private readonly accel: AccelChoice;
  private readonly startTimeoutMs: number;
  private readonly migrationTls: boolean;
  private readonly tcgDirtyWorkaround: boolean;
  /** Incoming listeners armed by this driver instance (monitor held until the VM resumes). */
  private readonly listeners = new Map<string, Listener>();
  /** VMs currently migrating out through this driver instance. */
  private readonly outgoing = new Map<string, QemuMigration>();
  /** Incoming VMs running here in post-copy: their monitor (out-of-band) and migration status. */
  private readonly halves = new Map<string, PostcopyHalf>();
  /** `--version`, once per binary file rather than once per VM of every offer. */
  private readonly binaryProbe: ExecutableProbe;
  /** Claims paused arrivals' MACs at this host's bridge; started with the first VM armed to wait. */
  private announcer?: Promise<HostAnnouncer | undefined>;

  constructor(opts: QemuDriverOptions) {
    this.runDir = path.resolve(opts.runDir);
    this.defs = new Map(opts.inventory.filter((d) => d.hypervisor === "qemu").map((d) => [d.name, d]));
    this.log = opts.logger ?? silentLogger;
    this.qemu = opts.qemuBinary ?? "qemu-system-x86_64";
    this.accel = opts.accel ?? chooseAccel();
    this.startTimeoutMs = opts.startTimeoutMs ?? 10_000;
    this.migrationTls = opts.migrationTls ?? true;
    this.tcgDirtyWorkaround = opts.tcgDirtyWorkaround ?? true;
    this.binaryProbe = new ExecutableProbe(this.qemu, () => this.probeBinary());
    fs.mkdirSync(this.runDir, { recursive: true });
    this.log.info(`qemu driver: ${this.accel.reason}`, {
      runDir: this.runDir,
      vms: this.defs.size,
      migrationTls: this.migrationTls,
    });
  }

  available(): Promise<{ ok: boolean; detail: string }> {
    return this.binaryProbe.check();
  }

  private async probeBinary(): Promise<{ ok: boolean; detail: string }> {
    const r = await execa(this.qemu, ["--version"], { reject: false });
    if (r.exitCode !== 0)
      return { ok: false, detail: `${this.qemu} not found or not working; apt-get install qemu-system-x86` };
    return { ok: true, detail: `${r.stdout.split("\n")[0]}; ${this.accel.reason}` };
  }

  inventory(): VmDefinition[] {
    return [...this.defs.values()];
  }

  files(vm: string): VmFiles {
    const base = path.join(this.runDir, vm);
    return {
      pid: `${base}.pid`,
      qmp: `${base}.qmp`,
      mon: `${base}.mon`,
      serial: `${base}.serial.log`,
      pskIn: `${base}.psk-in`,
      pskOut: `${base}.psk-out`,
      pskNbd: `${base}.psk-nbd`,
      createdImages: `${base}.created-images.json`,
      dedupIn: `${base}.dedup-in.sock`,
      dedupOut: `${base}.dedup-out`,
      hold: `${base}.hold`,
    };
  }

  /** The QEMU process of this VM in this run dir, if any (stale files are removed). */
  pid(vm: string): number | undefined {
    const files = this.files(vm);
    const pid = livePid(files.pid);
    if (pid === undefined) this.removeRunFiles(vm);
    return pid;
  }

  async state(vm: string): Promise<VmRunState> {
    this.definition(vm);
    // without asking QEMU, whose main loop may wait for a page that cannot come
    if (this.halves.get(vm)?.status.startsWith("postcopy-") && this.pid(vm) !== undefined) return "postcopy";
    const status = await this.queryStatus(vm);
    if (status === undefined) return "absent";
    if (status === "finish-migrate" && this.outgoing.get(vm)?.phase === "pre-switchover") return "pre-switchover";
    if (status === "paused" && (await this.isArrived(vm))) return "arrived";
    // the destination's half runs (or waits for pages), the source's is stopped: either way it is split
    if (status !== "inmigrate" && status !== "shutdown" && (await this.inPostcopy(vm))) return "postcopy";
    return runState(status);
  }

  /** Held on arrival (its marker) and its incoming migration completed, as QEMU says now (or said, in an event). */
  private async isArrived(vm: string): Promise<boolean> {
    if (!fs.existsSync(this.files(vm).hold)) return false;
    if (this.heldMonitor(vm)) return this.listeners.get(vm)?.status === "completed";
    return (await this.queryMigration(vm).catch(() => undefined)) === "completed";
  }

  /**
   * The listener's monitor while it is open (until the arrival runs or is removed): a group's
   * decision asks and resumes through it, with no monitor connection of its own on that path.
   */
  private heldMonitor(vm: string): QmpClient | undefined {
    const client = this.listeners.get(vm)?.client;
    return client && !client.isClosed ? client : undefined;
  }

  /** Whether this VM's migration (outgoing, or incoming here) is in post-copy: its memory is split. */
  private async inPostcopy(vm: string): Promise<boolean> {
    const migration = await this.queryMigration(vm).catch(() => undefined);
    return migration?.startsWith("postcopy-") ?? false;
  }

  /** query-migrate's status on the short-query monitor (the incoming side's own, on a destination). */
  private async queryMigration(vm: string): Promise<string | undefined> {
    const client = await QmpClient.connect(this.files(vm).mon);
    try {
      return (await client.execute<{ status?: string }>("query-migrate")).status;
    } finally {
      await client.close();
    }
  }

  async settleOrphanedMigration(vm: string, opts: SettleOptions = {}): Promise<string | undefined> {
    const done = await this.settleOrphan(vm, opts);
    // a group's destination may have claimed its frames before the agent died: they come back here
    if (done?.runsHere)
      await this.announce(vm).catch((err: unknown) =>
        this.log.warn(`could not announce ${vm}`, { error: TeleportError.from(err).message }),
      );
    return done?.what;
  }

  private async settleOrphan(
    vm: string,
    opts: SettleOptions,
  ): Promise<{ what: string; runsHere?: boolean } | undefined> {
    this.definition(vm);
    if (this.outgoing.has(vm)) return undefined;
    const status = await this.queryStatus(vm);
    if (status === undefined || !["running", "finish-migrate", "postmigrate", "paused"].includes(status))
      return undefined;
    const client = await QmpClient.connect(this.files(vm).mon);
    try {
      const migration = (await client.execute<{ status?: string }>("query-migrate")).status;
      if (status === "postmigrate" || status === "paused") {
        const ended = migration === "completed" || migration === "failed" || migration === "cancelled";
        if (!ended || (status === "paused" && migration === "completed")) return undefined; // not ours to settle
        if (opts.keepStopped)
          return { what: `its migration ${migration} with the VM stopped here: kept paused for the group's decision` };
        if (migration === "completed") {
          // QEMU handed the VM over and the destination runs it: this paused copy is stale
          await client.close();
          await this.quit(vm);
          return { what: "it had moved away: quit its stale paused copy" };
        }
        // stopped for a switchover (QMP stop), then the migration failed: QEMU does not restart it
        await client.execute("cont");
        return {
          what: `its migration ${migration} after it was stopped for a switchover: the VM runs here again`,
          runsHere: true,
        };
      }
      if (migration?.startsWith("postcopy-"))
        return {
          what: `its migration is in post-copy (${migration}): its memory is split with the destination, left as is`,
        };
      // held in pre-copy (running) or paused at pre-switchover (finish-migrate) for a dead agent's wave
      const held = migration === "active" || migration === "pre-switchover";
      if (held) {
        await client.execute("migrate_cancel");
        for (let i = 0; i < 100 && (await client.execute<{ status: string }>("query-status")).status !== "running"; i++)
          await new Promise((r) => setTimeout(r, 50));
      }
      // a dead agent's disk mirrors (it died while they copied, or with the memory held)
      const mirrors = await dropOrphanedMirrors(client);
      const what = [
        held && `its migration (${migration}) had no agent any more: cancelled, the VM runs here`,
        mirrors > 0 && `${mirrors} disk mirror(s) without an agent stopped, its disk is its own again`,
      ].filter((w): w is string => typeof w === "string");
      return what.length ? { what: what.join("; "), runsHere: held } : undefined;
    } finally {
      await client.close();
    }
  }

  async start(vm: string): Promise<void> {
    const def = this.definition(vm);
    await this.requireAbsent(vm);
    await this.spawn(def, false);
    const deadline = Date.now() + this.startTimeoutMs;
    for (;;) {
      const status = await this.queryStatus(vm);
      if (status === undefined)
        throw new TeleportError(500, `QEMU of VM ${vm} exited while starting`, [`see ${this.files(vm).serial}`]);
      if (status === "running") break;
      if (Date.now() > deadline)
        throw new TeleportError(
          500,
          `VM ${vm} did not start running within ${this.startTimeoutMs} ms (state ${status})`,
        );
      await new Promise((r) => setTimeout(r, 50));
    }
    this.log.info(`started ${vm}`, { pid: this.pid(vm) });
  }

  async stop(vm: string): Promise<void> {
    this.definition(vm);
    // Killing a source mid-migration would leave the VM on neither host.
    if (this.outgoing.has(vm))
      throw new TeleportError(486, `VM ${vm} is migrating out; abort the migration before stopping it`);
    if ((await this.state(vm)) === "postcopy")
      throw new TeleportError(409, `VM ${vm} is in post-copy: its memory is split between two hosts`, [
        "stopping either half loses the VM; recover the migration (docs/operators.md, post-copy recovery)",
      ]);
    await this.dropListener(vm);
    await this.quit(vm);
    this.log.info(`stopped ${vm}`);
  }

  async vetDisks(vm: string, disks: DiskSpec[]): Promise<string[]> {
    return vetIncomingDisks(this.definition(vm), disks);
  }

  async arm(vm: string, opts: ArmOptions): Promise<ArmedListener> {
    const def = this.definition(vm);
    if (opts.dedup) vetDedup(vm, opts.compress, !!opts.postcopy);
    await this.requireAbsent(vm);
    const copied = (opts.disks ?? []).filter(isCopied);
    const images = new CreatedImages(this.files(vm).createdImages);
    if (copied.length) {
      const problems = vetIncomingDisks(def, copied);
      if (problems.length) throw new TeleportError(488, `cannot receive the disks of ${vm}`, problems);
      await images.create(def, copied);
    }
    const t0 = performance.now();
    const pskIn = this.files(vm).pskIn;
    // spawn() removes the last run's files (key folder and sockets too) before its first await, then
    // QEMU starts; meanwhile the key is written and the monitor is connected once its socket appears
    const hold = !!opts.holdOnArrival;
    const spawned = this.spawn(def, true, hold);
    let t1 = t0;
    void spawned.then(() => (t1 = performance.now())).catch(() => undefined);
    // capabilities and credentials go out right behind the monitor's negotiation, on whichever connection
    const setups = new Map<QmpClient, Promise<void>>();
    const monitor: QmpConnectOptions = {
      oob: !!opts.postcopy,
      onNegotiating: (c) => {
        const setup = this.prepareIncoming(c, pskIn, opts);
        setup.catch(() => undefined); // awaited below for the connection that is kept
        setups.set(c, setup);
      },
    };
    let early: EarlyQmp | undefined;
    let client: QmpClient | undefined;
    try {
      if (this.migrationTls) writeServerKeyDir(pskIn, opts.secret); // before the monitor can greet
      early = connectOnCreate(this.files(vm).qmp, monitor);
      // QEMU greets once its main loop runs, often well before its daemonizing parent has been reaped
      // (up to 15 ms on a busy host): the monitor is set up then, the listener only once the start is confirmed
      const first = await Promise.race([early.connected, spawned.then(() => undefined)]);
      const qmp = first ?? (await early.finish(true)) ?? (await QmpClient.connect(this.files(vm).qmp, monitor));
      client = qmp;
      const setup = setups.get(qmp);
      if (!setup) throw new TeleportError(500, `the monitor of ${vm} connected without its setup`); // never listen bare
      await setup;
      await spawned;
      if (hold) fs.writeFileSync(this.files(vm).hold, ""); // spawn() removed the last run's files first
      if (hold && def.nics.some((n) => n.kind === "tap")) void this.hostAnnouncer();
      const uri = await this.listen(client, vm, opts);
      const exports = copied.length ? await this.exportDisks(client, vm, copied, opts) : [];
      const listener: Listener = { uri, client, postcopy: !!opts.postcopy, status: "setup" };
      this.listeners.set(vm, listener);
      // Once the VM has arrived the listener is over: free the monitor. It arrives running (RESUME),
      // or paused when the source was stopped for a group switchover (QEMU carries the source's run
      // state): then QEMU says only that the migration completed, and we run it. Held on arrival
      // (-S), it waits with its listener for resumeArrived() or discardArrived().
      const off = client.onEvent((ev) => {
        if (ev.event === "MIGRATION") listener.status = String(ev.data.status);
        if (ev.event !== "RESUME" && listener.status !== "completed") return;
        if (hold && ev.event !== "RESUME") return;
        off();
        void (ev.event === "RESUME" ? Promise.resolve() : this.runPausedArrival(vm, client))
          .catch((err: unknown) =>
            this.log.warn(`could not run ${vm}, which arrived paused`, { error: TeleportError.from(err).message }),
          )
          .then(() => this.arrived(vm));
      });
      const ms = { spawn: Math.round(t1 - t0), setup: Math.round(performance.now() - t1) };
      this.log.info(`armed ${vm}`, { uri, exports: exports.map((e) => e.uri), ms, holdOnArrival: hold });
      return { vm, uri, exports };
    } catch (err) {
      void early?.finish(false);
      await spawned.catch(() => undefined); // a QEMU still starting is quit once it has
      await client?.close();
      await this.quit(vm);
      images.remove();
      throw TeleportError.from(err);
    }
  }

  /**
   * A VM that arrived paused without a hold: its source was stopped for a switchover (QMP stop),
   * and QEMU gives the destination the source's run state. Every VM is running when its migration
   * starts (migrate refuses others), so it runs here.
   */
  private async runPausedArrival(vm: string, listener?: QmpClient): Promise<void> {
    if (fs.existsSync(this.files(vm).hold)) return;
    const run = async (mon: QmpClient): Promise<void> => {
      const { status } = await mon.execute<{ status: string }>("query-status");
      const migration = (await mon.execute<{ status?: string }>("query-migrate")).status;
      if (status === "paused" && migration === "completed") await mon.execute("cont");
    };
    // the listener's monitor when it is still ours: at once, and the query monitor stays free
    await (listener ? run(listener) : this.onMonitor(vm, run));
  }

  /** Run `fn` on the VM's short-query monitor. */
  private async onMonitor<T>(vm: string, fn: (mon: QmpClient) => Promise<T>): Promise<T> {
    const mon = await QmpClient.connect(this.files(vm).mon);
    try {
      return await fn(mon);
    } finally {
      await mon.close();
    }
  }

  async waitArrived(vm: string, timeoutMs: number): Promise<void> {
    this.definition(vm);
    const gone = () =>
      new TeleportError(503, `VM ${vm} will not arrive here: its incoming QEMU is gone or its migration failed`);
    if (this.pid(vm) === undefined) throw gone();
    if (!fs.existsSync(this.files(vm).hold))
      throw new TeleportError(409, `VM ${vm} was not armed to wait on arrival (holdOnArrival)`);
    const listener = this.listeners.get(vm);
    const deadline = Date.now() + timeoutMs;
    if (listener && !listener.client.isClosed && listener.status !== "completed") {
      // the listener's own events: no polling of a QEMU busy loading the state
      const ev = await listener.client
        .waitForEvent(
          (e) => e.event === "MIGRATION" && ["completed", "failed", "cancelled"].includes(String(e.data.status)),
          timeoutMs,
          `the arrival of ${vm}`,
        )
        .catch((err: unknown) => {
          if (listener.client.isClosed) throw gone();
          throw new TeleportError(504, `VM ${vm} did not arrive here within ${timeoutMs} ms`, [
            TeleportError.from(err).message,
          ]);
        });
      if (ev.data.status !== "completed") throw gone();
    }
    // decided from QEMU (also after an agent restart, with no listener of ours)
    for (;;) {
      const state = await this.state(vm);
      if (state === "arrived") return;
      if (state === "absent" || state === "stopped") throw gone();
      if (state !== "incoming") throw new TeleportError(409, `VM ${vm} is ${state} here, not waiting on arrival`);
      if (Date.now() > deadline) throw new TeleportError(504, `VM ${vm} did not arrive here within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async resumeArrived(vm: string, opts: { checked?: boolean } = {}): Promise<void> {
    this.definition(vm);
    // no query on the group's pause when the decision has just seen it arrived (a `cont` to a copy
    // that died since fails; one that arrived cannot go back to waiting for its stream)
    if (!opts.checked) {
      const state = await this.state(vm);
      if (state === "running" && !fs.existsSync(this.files(vm).hold)) return; // resumed already
      if (state !== "arrived") throw new TeleportError(409, `VM ${vm} is ${state} here, not arrived: cannot resume it`);
    }
    const held = this.heldMonitor(vm);
    await (held ? held.execute("cont") : this.onMonitor(vm, (mon) => mon.execute("cont")));
    fs.rmSync(this.files(vm).hold, { force: true });
    await this.arrived(vm);
    this.log.info(`resumed ${vm}, which had arrived held`);
  }

  async discardArrived(vm: string): Promise<void> {
    this.definition(vm);
    const state = await this.state(vm);
    if (state === "running" || state === "postcopy")
      throw new TeleportError(486, `VM ${vm} runs here (${state}): not discarding it`);
    if (state !== "arrived" && state !== "incoming" && state !== "absent")
      throw new TeleportError(409, `VM ${vm} is ${state} here, not an arrival that never ran: not discarding it`);
    // it never ran here: the source's copy is the VM
    await this.dropListener(vm);
    await this.quit(vm);
    fs.rmSync(this.files(vm).hold, { force: true });
    this.removeCreatedImages(vm);
    this.log.info(`discarded the arrived copy of ${vm}`);
  }

  async announce(vm: string): Promise<void> {
    this.definition(vm);
    if (this.pid(vm) === undefined) throw new TeleportError(404, `VM ${vm} has no QEMU on this host`);
    const qemuOwn = this.onMonitor(vm, (mon) => mon.execute("announce-self", { ...ANNOUNCE, id: `st-${vm}` }));
    await Promise.all([this.claimNetwork(vm), qemuOwn]);
  }

  async claimNetwork(vm: string): Promise<void> {
    const taps = this.definition(vm).nics.flatMap((n) => (n.kind === "tap" && n.ifname ? [[n.ifname, n.mac]] : []));
    if (!taps.length) return;
    const announcer = await this.hostAnnouncer();
    if (!announcer) return;
    const done = await Promise.allSettled(taps.map(([tap, mac]) => announcer.claim(tap, mac)));
    for (const d of done)
      if (d.status === "rejected")
        this.log.warn(`could not claim the MACs of ${vm} at this host's bridge`, {
          error: TeleportError.from(d.reason).message,
        });
  }

  /** The announcer, started once; undefined (said once) when this host cannot run it. */
  private hostAnnouncer(): Promise<HostAnnouncer | undefined> {
    this.announcer ??= HostAnnouncer.start().catch((err: unknown) => {
      this.log.warn(
        "paused arrivals are announced only when they run: frames sent to a group during its switchover are lost",
        {
          error: TeleportError.from(err).message,
        },
      );
      return undefined;
    });
    return this.announcer;
  }

  async resumeHere(vm: string): Promise<void> {
    this.definition(vm);
    if (this.outgoing.has(vm))
      throw new TeleportError(486, `VM ${vm} is still migrating out: abort its migration first`);
    const status = await this.queryStatus(vm);
    if (status === undefined) throw new TeleportError(404, `VM ${vm} has no QEMU on this host`);
    if (await this.inPostcopy(vm))
      throw new TeleportError(409, `VM ${vm} is in post-copy: its memory is split between two hosts`);
    if (status === "inmigrate") throw new TeleportError(409, `VM ${vm} is ${status} here: its migration is not over`);
    // qmp_cont re-activates the block devices a completed migration handed over
    if (status !== "running")
      await this.onMonitor(vm, async (mon) => {
        // a dead agent's migration still waiting at pre-switchover: the group was aborted, so end it first
        if (status === "finish-migrate") await cancelMigration(mon);
        await mon.execute("cont");
      });
    await this.announce(vm);
    this.log.info(`resumed ${vm} here (${status} before)`);
  }

  /**
   * An incoming QEMU's migration capabilities (post-copy, multifd for a compressed stream) and
   * TLS-PSK credentials, sent at once; the first failure is thrown. All of it before migrate-incoming:
   * QEMU sizes its listener's backlog by multifd-channels when it starts listening.
   */
  private async prepareIncoming(client: QmpClient, pskIn: string, opts: ArmOptions): Promise<void> {
    const reduction = reductionParameters(opts.compress, undefined);
    const done = await Promise.allSettled([
      client.execute("migrate-set-capabilities", {
        capabilities: [
          { capability: "events", state: true },
          { capability: "return-path", state: true },
          { capability: "postcopy-ram", state: !!opts.postcopy },
          ...reductionCapabilities(opts.compress, false),
        ],
      }),
      Object.keys(reduction).length ? client.execute("migrate-set-parameters", reduction) : undefined,
      // a dedup stream's TLS is its relay's: QEMU's own socket is local
      this.migrationTls && !opts.dedup ? useServerKeyDir(client, "st-incoming", pskIn) : undefined,
    ]);
    for (const r of done) if (r.status === "rejected") throw r.reason;
  }

  /** QEMU's own NBD server, TLS-PSK from its one-time secret, one writable export per copied disk. */
  private async exportDisks(client: QmpClient, vm: string, disks: DiskSpec[], opts: ArmOptions): Promise<DiskExport[]> {
    const secret = opts.nbdSecret;
    if (!secret) throw new TeleportError(500, `no NBD secret to export the disks of ${vm}`);
    const tls = this.migrationTls;
    if (tls) await addPskCredentials(client, "server", "st-nbd", secret, this.files(vm).pskNbd);
    const port = await bindWithRetry(opts.address, opts.nbdPort, opts.anotherPort, async (port) => {
      const addr = { type: "inet", data: { host: opts.address, port: String(port) } };
      try {
        await client.execute("nbd-server-start", tls ? { addr, "tls-creds": "st-nbd" } : { addr });
        return port;
      } catch (err) {
        throw new TeleportError(503, `cannot serve the disks of ${vm} on port ${port}`, [
          TeleportError.from(err).message,
        ]);
      }
    });
    const host = opts.address.includes(":") ? `[${opts.address}]` : opts.address;
    for (const d of disks)
      await client.execute("block-export-add", {
        type: "nbd",
        id: `st-export-${d.target}`,
        "node-name": diskNode(d.target),
        name: d.target,
        writable: true,
      });
    return disks.map((d) => ({ disk: d.target, uri: `nbd://${host}:${port}/${d.target}`, secret }));
  }

  async disarm(vm: string): Promise<void> {
    this.definition(vm);
    if (this.halves.has(vm)) throw new TeleportError(486, `VM ${vm} runs here in post-copy: not disarming it`);
    const status = await this.queryStatus(vm);
    if (status === undefined) {
      await this.dropListener(vm);
      this.removeCreatedImages(vm);
      return;
    }
    if (status !== "inmigrate" && (await this.state(vm)) === "arrived")
      // held for the group's decision: discardArrived() removes it (and its images), resumeArrived() runs it
      throw new TeleportError(486, `VM ${vm} arrived here and waits for the group's decision: not disarming it`);
    if (status !== "inmigrate") {
      // The VM arrived (or is being switched over): it is the only copy now. Never kill it, but
      // close what its arrival no longer needs (a paused arrival has no RESUME to do it).
      await this.arrived(vm);
      throw new TeleportError(486, `VM ${vm} is ${status} here, not waiting for a migration: not disarming it`);
    }
    await this.dropListener(vm);
    await this.quit(vm);
    this.removeCreatedImages(vm);
    this.log.info(`disarmed ${vm}`);
  }

  async waitResumed(vm: string, timeoutMs: number): Promise<void> {
    this.definition(vm);
    const deadline = Date.now() + timeoutMs;
    let settled = false;
    for (;;) {
      const status = await this.queryStatus(vm);
      if (status === undefined) {
        await this.dropListener(vm);
        this.removeCreatedImages(vm);
        throw new TeleportError(
          503,
          `VM ${vm} is not here: its incoming QEMU is gone (migration failed or the listener was killed)`,
        );
      }
      if (status === "running") return this.arrived(vm);
      // arrived but not running (paused like the source was, or worse): its listener is done with either way
      // held on arrival: the group's decision settles it (resumeArrived / discardArrived), not this wait
      if (status !== "inmigrate" && !settled && !fs.existsSync(this.files(vm).hold)) {
        settled = true;
        // stopped at the source for a switchover, and no listener of ours ran it (an agent restart)
        if (status === "paused" && !this.listeners.has(vm)) await this.runPausedArrival(vm);
        await this.arrived(vm);
      }
      if (status !== "inmigrate" && status !== "paused")
        throw new TeleportError(500, `VM ${vm} arrived but is ${status}, not running`);
      if (Date.now() > deadline)
        throw new TeleportError(504, `VM ${vm} did not resume here within ${timeoutMs} ms (state ${status})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  migrate(vm: string, target: MigrationTarget, opts: MigrationOptions): MigrationHandle {
    const hooks: MigrationHooks = {
      connect: async () => {
        this.definition(vm);
        if (this.outgoing.has(vm)) throw new TeleportError(486, `VM ${vm} is already migrating`);
        if (this.pid(vm) === undefined) throw new TeleportError(404, `VM ${vm} does not run on this host`);
        return QmpClient.connect(this.files(vm).qmp);
      },
      pskDir: this.migrationTls ? this.files(vm).pskOut : undefined,
      dedupDir: this.files(vm).dedupOut,
      quitSource: () => this.quit(vm),
      disks: () => this.mirrorDisks(vm, target.exports ?? []),
      settled: () => {
        if (this.outgoing.get(vm) === migration) this.outgoing.delete(vm);
        // a source QEMU that died mid-migration leaves its pidfile and sockets: pid() drops them
        this.pid(vm);
      },
    };
    const migration = new QemuMigration(vm, target, opts, hooks, this.log);
    if (!this.outgoing.has(vm)) this.outgoing.set(vm, migration);
    return migration;
  }

  async recoverIncoming(vm: string, opts: RecoveryOptions): Promise<string> {
    this.definition(vm);
    const half = this.halves.get(vm);
    if (!half)
      throw new TeleportError(409, `VM ${vm} has no post-copy in progress that this agent received`, [
        "only the agent process that received it holds the monitor connection recovery needs",
      ]);
    // Out-of-band only: a TCG vCPU waiting for a page that cannot come may hold QEMU's main lock.
    if (half.status === "postcopy-active") {
      // the source saw the link break; this half may wait on a dead socket for minutes
      const paused = half.client.waitForEvent(
        (ev) => ev.event === "MIGRATION" && ev.data.status === "postcopy-paused",
        5000,
        `postcopy-paused of ${vm}`,
      );
      await half.client.executeOob("migrate-pause").catch(() => undefined); // it may have paused meanwhile
      await paused.catch(() => undefined);
    }
    if (half.status !== "postcopy-paused")
      throw new TeleportError(409, `VM ${vm} is not paused in post-copy here (its migration is ${half.status})`);
    // the listener's credentials read their key at each handshake: the new secret replaces the old
    if (this.migrationTls) writeKeyDir(this.files(vm).pskIn, opts.secret);
    // QEMU listens once per pause: a source that asks again (its resume failed) gets that listener,
    // which now takes the new secret
    if (half.recoverUri) return half.recoverUri;
    const uri = tcpUri(opts.address, opts.port);
    try {
      await half.client.executeOob("migrate-recover", { uri });
    } catch (err) {
      throw new TeleportError(503, `cannot listen again for ${vm} on ${uri}`, [TeleportError.from(err).message]);
    }
    half.recoverUri = uri;
    this.log.info(`listening for the post-copy recovery of ${vm}`, { uri });
    return uri;
  }

  /**
   * An incoming VM switched to post-copy here: keep its (out-of-band) monitor and follow its
   * migration until it completes, so a broken link can be recovered even when QEMU's main loop
   * waits for a page; the recovery key goes once the stream runs again.
   */
  private keepPostcopyHalf(vm: string, client: QmpClient, status: string): void {
    const half: PostcopyHalf = { client, status };
    this.halves.set(vm, half);
    const off = client.onEvent((ev) => {
      if (ev.event !== "MIGRATION") return;
      const next = String(ev.data.status);
      // a recovery's listener reports its own setup: the half stays in post-copy until it ends
      if (!next.startsWith("postcopy-") && next !== "completed" && next !== "failed") return;
      half.status = next;
      const ended = next === "completed" || next === "failed";
      if (next === "postcopy-active" || ended) {
        half.recoverUri = undefined; // the next break listens anew
        fs.rmSync(this.files(vm).pskIn, { recursive: true, force: true });
      }
      if (ended) void client.close();
    });
    void client.closed.then(() => {
      off();
      if (this.halves.get(vm) === half) this.halves.delete(vm);
    });
  }

  /** The copied disks of `vm`, each with the export the destination armed for it. */
  private mirrorDisks(vm: string, exports: DiskExport[]): MirrorDisk[] {
    return this.definition(vm)
      .disks.filter(isCopied)
      .map((d) => {
        const exp = exports.find((e) => e.disk === d.target);
        if (!exp) throw new TeleportError(502, `the destination armed no NBD export for disk ${d.target} of ${vm}`);
        return { target: d.target, mode: d.mode as MirrorDisk["mode"], export: exp };
      });
  }

  /** The VM did not arrive here: delete the images its arming created, nothing else. */
  private removeCreatedImages(vm: string): void {
    const removed = new CreatedImages(this.files(vm).createdImages).remove();
    if (removed.length) this.log.info(`deleted the disk images created for ${vm}`, { files: removed });
  }

  /** The QEMU command line: identical on both hosts apart from run-dir paths and tap names. */
  qemuArgs(def: VmDefinition, incoming: boolean, hold = false): string[] {
    const f = this.files(def.name);
    const args = [
      "-name",
      def.name,
      "-accel",
      this.accel.accel,
      "-m",
      tcgSafeMemory(def.memoryMib, this.accel.accel, this.tcgDirtyWorkaround),
      "-smp",
      String(def.cpus),
    ];
    args.push("-nodefaults", "-no-user-config", "-display", "none");
    if (def.kernel) args.push("-kernel", def.kernel);
    if (def.initrd) args.push("-initrd", def.initrd);
    if (def.append !== undefined) args.push("-append", def.append);
    args.push(...diskArgs(def));
    def.nics.forEach((nic, i) => {
      const netdev =
        nic.kind === "tap" ? `tap,id=net${i},ifname=${nic.ifname},script=no,downscript=no` : `user,id=net${i}`;
      // romfile= (none) on both ends: a ROM that differs between hosts breaks the migration.
      args.push("-netdev", netdev, "-device", `virtio-net-pci,netdev=net${i},mac=${nic.mac},romfile=`);
    });
    args.push("-chardev", `file,id=serial0,path=${f.serial},append=on`, "-serial", "chardev:serial0");
    args.push("-qmp", `unix:${f.qmp},server=on,wait=off`, "-qmp", `unix:${f.mon},server=on,wait=off`);
    args.push("-pidfile", f.pid, "-daemonize");
    args.push(...(def.extraArgs ?? []));
    if (incoming) args.push("-incoming", "defer");
    // held on arrival: QEMU does not start the vCPUs when the migration completes (autostart off)
    if (hold) args.push("-S");
    return args;
  }

  private definition(vm: string): VmDefinition {
    const def = this.defs.get(vm);
    if (!def) throw new TeleportError(404, `VM ${vm} is not defined in this host's inventory`);
    return def;
  }

  private async requireAbsent(vm: string): Promise<void> {
    const status = await this.queryStatus(vm);
    if (status === undefined) return;
    throw new TeleportError(486, `VM ${vm} already has a QEMU on this host (${runState(status)})`);
  }

  private async spawn(def: VmDefinition, incoming: boolean, hold = false): Promise<void> {
    const f = this.files(def.name);
    if (f.mon.length > MAX_SOCKET_PATH || f.qmp.length > MAX_SOCKET_PATH)
      throw new TeleportError(
        400,
        `run dir path too long for QMP sockets (${f.mon.length} > ${MAX_SOCKET_PATH} bytes): ${this.runDir}`,
      );
    this.removeRunFiles(def.name);
    const r = await execa(this.qemu, this.qemuArgs(def, incoming, hold), { reject: false, stdin: "ignore" });
    if (r.exitCode !== 0 || livePid(f.pid) === undefined) {
      const why = (r.stderr || r.stdout || `exit code ${r.exitCode}`).split("\n").filter(Boolean);
      throw new TeleportError(500, `QEMU did not start VM ${def.name}`, why.slice(0, 5));
    }
  }

  /** Listen for the incoming migration; a port picked by us may be taken by someone else first. */
  private async listen(client: QmpClient, vm: string, opts: ArmOptions): Promise<string> {
    if (opts.dedup) {
      const { address, port, anotherPort, secret } = opts;
      const socket = this.files(vm).dedupIn;
      const incoming = { vm, index: opts.dedup, address, port, anotherPort, secret, socket };
      const { uri, relay } = await listenDedupIncoming(client, incoming, this.log);
      this.relays.set(vm, relay);
      return uri;
    }
    return bindWithRetry(opts.address, opts.port, opts.anotherPort, async (port) => {
      const uri = tcpUri(opts.address, port);
      try {
        await client.execute("migrate-incoming", { uri });
        return uri;
      } catch (err) {
        throw new TeleportError(503, `cannot listen for VM ${vm} on ${uri}`, [TeleportError.from(err).message]);
      }
    });
  }

  /**
   * QEMU's run state (query-status "status"), or undefined when this host has no QEMU for the VM,
   * including one that exits while we ask (e.g. an incoming QEMU whose migration just failed).
   */
  private async queryStatus(vm: string): Promise<string | undefined> {
    const pid = this.pid(vm);
    if (pid === undefined) return undefined;
    const held = this.heldMonitor(vm);
    if (held) {
      const status = await held.execute<{ status: string }>("query-status").then(
        (r) => r.status,
        () => undefined, // closed under us (QEMU went): ask as for any other VM
      );
      if (status) return status;
    }
    try {
      const client = await QmpClient.connect(this.files(vm).mon);
      try {
        return (await client.execute<{ status: string }>("query-status")).status;
      } finally {
        await client.close();
      }
    } catch (err) {
      if (await waitExit(pid, 1000)) {
        this.removeRunFiles(vm);
        return undefined;
      }
      throw err;
    }
  }

  /**
   * The incoming VM is here (running, or paused as the source was): the listener, its monitor, its
   * NBD server and its keys are done with. Safe to call again; without our listener (an agent
   * restart) the NBD server is stopped through the query monitor.
   */
  private async arrived(vm: string): Promise<void> {
    fs.rmSync(this.files(vm).pskIn, { recursive: true, force: true });
    const listener = this.listeners.get(vm);
    if (this.definition(vm).disks.some(isCopied)) {
      // the mirrors are done: no more writes from outside, and the images are the VM's own now
      await this.stopNbd(vm, listener?.client);
      new CreatedImages(this.files(vm).createdImages).keep();
    }
    fs.rmSync(this.files(vm).pskNbd, { recursive: true, force: true });
    // it resumed in post-copy (QEMU says postcopy-active before it starts the VM): keep its monitor
    if (listener?.postcopy && listener.status.startsWith("postcopy-")) {
      this.listeners.delete(vm);
      return this.keepPostcopyHalf(vm, listener.client, listener.status);
    }
    await this.dropListener(vm);
  }

  private async stopNbd(vm: string, client: QmpClient | undefined): Promise<void> {
    if (client) return void (await client.execute("nbd-server-stop").catch(() => undefined));
    const mon = await QmpClient.connect(this.files(vm).mon, { timeoutMs: 2000 }).catch(() => undefined);
    await mon?.execute("nbd-server-stop").catch(() => undefined); // "not running" when it was stopped already
    await mon?.close();
  }

  private async dropListener(vm: string): Promise<void> {
    const l = this.listeners.get(vm);
    this.listeners.delete(vm);
    await l?.client.close();
    await this.dropRelay(vm);
  }

  private async dropRelay(vm: string): Promise<void> {
    const relay = this.relays.get(vm);
    this.relays.delete(vm);
    await relay?.close();
  }

  /** Quit this host's QEMU for the VM (QMP quit, SIGTERM/SIGKILL if it does not go) and remove its files. */
  private async quit(vm: string): Promise<void> {
    const pid = this.pid(vm);
    if (pid === undefined) return;
    try {
      const client = await QmpClient.connect(this.files(vm).mon, { timeoutMs: 2000 });
      await client.execute("quit").catch(() => undefined); // QEMU may close before the reply arrives
      await client.close();
    } catch (err) {
      this.log.warn(`QMP quit of ${vm} failed, terminating pid ${pid}`, { error: TeleportError.from(err).message });
    }
    if (!(await waitExit(pid, 3000))) await terminate(pid);
    await this.dropRelay(vm);
    this.removeRunFiles(vm);
  }

  private removeRunFiles(vm: string): void {
    const f = this.files(vm);
    for (const p of [f.pid, f.qmp, f.mon, f.pskIn, f.pskOut, f.pskNbd, f.hold, f.dedupIn, f.dedupOut])
      fs.rmSync(p, { force: true, recursive: true });
  }
}
