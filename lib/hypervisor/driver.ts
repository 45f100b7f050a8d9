/**
 * One interface, many drivers (libvirt's design): the agents never know which hypervisor
 * moves a VM. A new hypervisor is one new file implementing HypervisorDriver.
 */
import type { SentPages } from "../dedup/encoder";
import type { DedupRebuilder } from "../dedup/rebuild";
import { TeleportError } from "../errors";
import type {
  CompressMethod,
  Convergence,
  DiskExport,
  DiskFormat,
  DiskMode,
  DiskSpec,
  Hypervisor,
  Role,
} from "../../nrdl/types";

/**
 * For drivers that carry no stream reduction (libvirt, VirtualBox: their `compression` is empty
 * and they have no `dedup`, so a destination never accepts one for them): arming with one anyway
 * is a bug, refused loudly.
 */
export function refuseReduction(kind: Hypervisor, vm: string, opts: Pick<ArmOptions, "compress" | "dedup">): void {
  const r = opts.compress;
  if (r) throw new TeleportError(488, `the ${kind} driver cannot apply compress ${r.method} to ${vm}`);
  if (opts.dedup) throw new TeleportError(488, `the ${kind} driver cannot apply group page dedup to ${vm}`);
}

export interface NicDefinition {
  /** "tap": an existing tap device on a bridge (named per host); "user": QEMU user-mode networking. */
  kind: "tap" | "user";
  /** Tap device name on this host (may differ between hosts). */
  ifname?: string;
  /** Must be identical on both hosts so the guest keeps its identity. */
  mac: string;
}

/** One disk image of a VM on this host (paths may differ between hosts; target, format and mode may not). */
export interface DiskDefinition {
  /** The disk's name within the VM, as NRDL's `<disk target>` (e.g. "vda"). */
  target: string;
  /** Where the image lives on this host; a destination creates copied images here. */
  file: string;
  format: DiskFormat;
  mode: DiskMode;
  /** copy-top: the base image under the overlay, present on both hosts with identical content. */
  backing?: string;
}

/** A VM as the local inventory defines it. Both hosts hold identical definitions. */
export interface VmDefinition {
  name: string;
  hypervisor: Hypervisor;
  role: Role;
  memoryMib: number;
  cpus: number;
  kernel?: string;
  initrd?: string;
  append?: string;
  disks: DiskDefinition[];
  nics: NicDefinition[];
  /** Extra hypervisor arguments, passed as an argument array (never through a shell). */
  extraArgs?: string[];
  /** A libvirt domain: where libvirt runs it (hypervisor "libvirt" only). */
  libvirt?: LibvirtDomainRef;
}

export interface LibvirtDomainRef {
  /** Connection URI of the local libvirt, `qemu:///system` by default (`?socket=` for another daemon). */
  uri: string;
  /** Domain name in that libvirt (default: the VM's name). */
  domain: string;
  /** Accept the VM when this libvirt does not define the domain: the source's domain XML defines it. */
  defineFromSource: boolean;
}

export type VmRunState =
  | "running"
  | "paused"
  /** waiting for an incoming migration */
  | "incoming"
  /** paused at the end of pre-copy, waiting for switchover */
  | "pre-switchover"
  /**
   * in post-copy: its memory is split between this host and the other (running at the destination
   * while pages follow, or paused there after a link failure); neither half may be stopped or run alone
   */
  | "postcopy"
  /**
   * group commit, destination: the whole state arrived (QEMU -S), paused until the group's decision;
   * resumeArrived() runs it (commit), discardArrived() removes it (abort)
   */
  | "arrived"
  | "stopped"
  /** defined but no process */
  | "absent";

export interface ArmOptions {
  /** Address to listen on. */
  address: string;
  /** Port to listen on; a free one is chosen when omitted. */
  port?: number;
  /** One-time secret for this migration (never logged). */
  secret: string;
  /** The offered disks to receive: the copied ones are created here and exported over NBD. */
  disks?: DiskSpec[];
  /**
   * Another port of the caller's range, for when `port` or `nbdPort` was taken by someone else
   * between the caller's check and the hypervisor's bind (undefined: none left).
   */
  anotherPort?: () => Promise<number | undefined>;
  /** Port of the NBD server for copied disks (a free one when omitted). */
  nbdPort?: number;
  /** One-time secret of the NBD server (never logged). */
  nbdSecret?: string;
  /** The source may switch this migration to post-copy (QEMU needs postcopy-ram on both ends). */
  postcopy?: boolean;
  /**
   * Group commit (NRDL 2 `commit="group"`): the VM must not run when its state has arrived (QEMU `-S`);
   * it waits in state "arrived" until resumeArrived() or discardArrived().
   */
  holdOnArrival?: boolean;
  /** The stream reduction agreed for this VM (NRDL 2 `<armed compress>`): the listener decodes it. */
  compress?: StreamReduction;
  /**
   * Group page dedup agreed for this VM (NRDL 2 `<armed dedup="on">`, SPEC.md 5.8): the dialog's
   * index, shared by its VMs; a relay listens and rebuilds the stream for the incoming QEMU.
   */
  dedup?: DedupRebuilder;
}

/** How one VM's migration stream is reduced (nrdl/SPEC.md 5.7); absent everywhere means the plain stream. */
export interface StreamReduction {
  method: CompressMethod;
  /** zstd, zlib: multifd channels, the same number on both ends. */
  channels?: number;
}

export interface ArmedListener {
  vm: string;
  /** URI the source migrates to, e.g. "tcp:127.0.0.1:49152". */
  uri: string;
  /** One NBD export per copied disk, secrets included. */
  exports: DiskExport[];
}

export interface MigrationTarget {
  uri: string;
  secret: string;
  /** Where to mirror each copied disk before the memory moves. */
  exports?: DiskExport[];
}

/**
 * "disks": copied disks are being mirrored; memory follows once every mirror is in sync.
 * "postcopy": the VM runs at the destination, its last pages follow on demand; "postcopy-paused":
 * the link broke in post-copy and both halves wait; "postcopy-recover": a new link is being set up.
 */
export type MigrationPhase =
  | "setup"
  | "disks"
  | "active"
  | "pre-switchover"
  | "device"
  | "postcopy"
  | "postcopy-paused"
  | "postcopy-recover"
  | "completed"
  | "failed"
  | "cancelled";

/** Byte counts are -1 when the hypervisor reports only a percentage (VirtualBox). */
export interface MigrationProgress {
  vm: string;
  phase: MigrationPhase;
  transferredBytes: number;
  remainingBytes: number;
  totalBytes: number;
  /** 0..1 */
  progress: number;
  /** Copied disks of the VM together, when it has any. */
  disk?: DiskProgress;
}

export interface DiskProgress {
  transferredBytes: number;
  totalBytes: number;
  /** 0..1 */
  progress: number;
}

export interface MigrationOptions {
  /** 0 = unlimited. */
  bandwidthMbps: number;
  downtimeLimitMs: number;
  timeoutS: number;
  /**
   * Coordinated switchover of a group: after the first full pass, hold the VM running in pre-copy
   * (never stopping it) until prime() and stop(); switchover() then sends the rest.
   */
  pauseBeforeSwitchover?: boolean;
  /**
   * Group commit: when the migration completes, keep the source's stopped copy (never quit it);
   * the executor quits it (commit) or resumes it (abort) when the destination has decided. A
   * migration that fails after switchover() leaves the VM stopped here too, for the same decision.
   */
  awaitCommit?: boolean;
  /**
   * stop() lets QEMU stop the VM itself (its downtime limit and bandwidth restored) instead of QMP
   * `stop`: a destination from before group commit runs an arrival only if the source VM was still
   * running when its last pass began, and would leave one stopped by QMP paused.
   */
  stopByQemu?: boolean;
  /**
   * For a guest that writes faster than the link carries: "auto-converge" throttles its vCPUs;
   * "postcopy" switches to post-copy once pre-copy stops gaining (the destination must be armed
   * with `postcopy`). Default "none": plain pre-copy, which such a guest makes run until timeout.
   */
  convergence?: Convergence;
  /** The stream reduction the destination agreed to for this VM (it armed its listener for it). */
  compress?: StreamReduction;
  /** Group page dedup the destination agreed to: the dialog's pages sent, shared by its VMs. */
  dedup?: SentPages;
  onProgress?: (p: MigrationProgress) => void;
  /**
   * Post-copy recovery: when the link breaks after the switch to post-copy, ask the destination for
   * a new listener (a new one-time secret with it). Called again until the migration runs on or
   * `recoverWithinS` has passed. Without it a broken post-copy cannot recover.
   */
  recover?: (vm: string) => Promise<MigrationTarget>;
  /** How long a broken post-copy keeps trying to recover (default 30 s); then both halves stay paused. */
  recoverWithinS?: number;
}

/** How settleOrphanedMigration treats a copy stopped for a switchover. */
export interface SettleOptions {
  /** Group commit: the decision is pending in a journal; leave a stopped copy (postmigrate or paused) as it is. */
  keepStopped?: boolean;
}

/** Destination side of a post-copy recovery: where to listen again, with a new one-time secret. */
export interface RecoveryOptions {
  address: string;
  port: number;
  /** Never logged. */
  secret: string;
}

export interface MigrationResult {
  vm: string;
  /** As the hypervisor measured them. */
  totalMs: number;
  /** -1 when the hypervisor does not measure it (VirtualBox). */
  downtimeMs: number;
  /** -1 when the hypervisor does not measure it (VirtualBox). */
  transferredBytes: number;
  /** When the source stopped the VM for switchover (epoch ms), when the hypervisor says; for the group's pause. */
  stoppedAt?: number;
  /** When switchover() released the last pages and device state (epoch ms). */
  continuedAt?: number;
  /** Bytes of disk mirrored, when the VM had copied disks. */
  diskTransferredBytes?: number;
}

/** A running outgoing migration. */
export interface MigrationHandle {
  /**
   * Settles when the VM runs on the destination (and the source copy is gone), or rejects with a TeleportError (source
   * keeps running).
   */
  readonly done: Promise<MigrationResult>;
  /**
   * With pauseBeforeSwitchover: resolves when every page was sent once and the VM, still running, waits for switchover.
   */
  readonly readyToSwitch: Promise<void>;
  /**
   * After readyToSwitch: lift the hold's bandwidth so the migration thread is awake and sending
   * (QEMU sleeps out its 100 ms rate-limit window otherwise), while the VM still runs. Resolves
   * when it is awake, or when the VM stopped on its own meanwhile (then stoppedAt is set).
   */
  prime(): Promise<void>;
  /**
   * After every VM of the group was primed: lift a cap prime() put back (it holds a caught-up VM
   * again, so that it cannot stop alone while the others catch up); resolves when the migration
   * thread is awake. Optional: a handle whose prime() leaves the cap lifted needs none.
   */
  wake?(): Promise<void>;
  /**
   * Stop the VM now (QMP stop), for a coordinated switchover; resolves with when it stopped (epoch ms,
   * the hypervisor's own timestamp when it gives one). Before switchover() a failure or abort()
   * resumes the VM here: its state has not left.
   */
  stop(): Promise<number>;
  /**
   * Settles when the VM stopped at the source for the switchover, by stop() or on its own (QEMU
   * converged), with when (epoch ms): the executor stops the whole group at the first STOP.
   * Optional: a handle without it is stopped when all are primed.
   */
  readonly stopped?: Promise<number>;
  /**
   * Settles when the stopped VM waits with only its last pages and device state left (QEMU
   * pre-switchover): the executor sends no VM of the group before every one is there. Optional: a
   * handle without it (libvirt, which cannot wait there) is sent right after its stop.
   */
  readonly atSwitchover?: Promise<void>;
  /**
   * After stop(): send the last pages and the device state (migrate-continue); resolves when the
   * destination has loaded the VM (with holdOnArrival there it waits "arrived", not running).
   */
  switchover(): Promise<void>;
  /**
   * Cancel; the VM keeps running on the source. Refused (the migration goes on) once in post-copy:
   * the VM already runs at the destination and the source's copy is stale.
   */
  abort(): Promise<void>;
}

export interface HypervisorDriver {
  readonly kind: Hypervisor;
  /**
   * The stream reductions this driver applies on both ends (nrdl/SPEC.md 5.7). A destination never
   * accepts, and a source never offers, a method its driver lacks; absent means none.
   */
  readonly compression?: ReadonlySet<CompressMethod>;
  /**
   * Whether this driver does group page dedup on both ends (nrdl/SPEC.md 5.8: ArmOptions.dedup,
   * MigrationOptions.dedup). A destination never accepts it, and a source never offers it, without.
   */
  readonly dedup?: boolean;
  /**
   * Whether this host can run the driver, with a human explanation (e.g. "qemu-system-x86_64 not found; apt-get install
   * qemu-system-x86").
   */
  available(): Promise<{ ok: boolean; detail: string }>;
  /** VM definitions this driver manages on this host. */
  inventory(): VmDefinition[];
  state(vm: string): Promise<VmRunState>;
  start(vm: string): Promise<void>;
  stop(vm: string): Promise<void>;
  /** Start the VM waiting for an incoming migration. */
  arm(vm: string, opts: ArmOptions): Promise<ArmedListener>;
  /**
   * Destination side: why the offered disks cannot be received here (one line each, for a 488),
   * checked before anything is created. Empty when they can.
   */
  vetDisks?(vm: string, disks: DiskSpec[]): Promise<string[]>;
  /**
   * Remove a listener that has not received a VM (never touches a VM that already resumed here),
   * and delete the disk images its arming created (never a file that was there before).
   */
  disarm(vm: string): Promise<void>;
  /**
   * Destination side: resolves when an incoming VM runs here; rejects with a TeleportError when the listener dies or on
   * timeout.
   */
  waitResumed(vm: string, timeoutMs: number): Promise<void>;
  migrate(vm: string, target: MigrationTarget, opts: MigrationOptions): MigrationHandle;
  /**
   * Destination side, before arming: why this host cannot receive the VM (e.g. libvirt's domain
   * has other memory, or a disk file is missing), undefined when it can. Changes nothing.
   */
  checkIncoming?(vm: string): Promise<string | undefined>;
  /**
   * Destination side, post-copy recovery: pause this host's half if it has not noticed the broken
   * link yet, then listen for the source's resumed stream on `opts.port` with the new secret.
   * Resolves with the URI the source resumes to; refuses (409) a VM not in post-copy here.
   */
  recoverIncoming?(vm: string, opts: RecoveryOptions): Promise<string>;
  /** Group commit, destination: resolves when the VM's state arrived (state "arrived"); rejects if it cannot. */
  waitArrived?(vm: string, timeoutMs: number): Promise<void>;
  /**
   * Group commit, destination (commit): run an arrived VM here. `checked`: the caller has just seen
   * it arrived (a group's commit), so it is resumed with no state query first; one gone since fails.
   */
  resumeArrived?(vm: string, opts?: { checked?: boolean }): Promise<void>;
  /**
   * Group commit, destination (abort): remove an arrived copy that never ran, and the disk images
   * its arming created. Refuses (486) a VM that runs here.
   */
  discardArrived?(vm: string): Promise<void>;
  /**
   * Source side, group commit (abort): run a copy stopped here for the switchover again (paused at
   * or after its migration, which completed or failed) and announce its MACs from here.
   */
  resumeHere?(vm: string): Promise<void>;
  /**
   * Announce the VM's MACs from this host (claimNetwork, and QEMU's own RARPs, which a paused QEMU
   * sends only once it runs), so the network sends its frames here.
   */
  announce?(vm: string): Promise<void>;
  /**
   * Point this host's network at the VM's MACs now, even while it is paused: its bridge forwards
   * them to the VM's tap and a RARP from each MAC tells the switches beyond. Frames for a paused
   * copy then wait in its tap until it runs. Resolves when done (nothing when the host cannot).
   */
  claimNetwork?(vm: string): Promise<void>;
  /**
   * Source side, after its agent crashed: settle an outgoing migration the agent left behind. A
   * copy whose migration completed without it is quit (what the agent does after every move); a
   * migration still going (held for a switchover nobody will call, or paused at pre-switchover)
   * is cancelled, so the VM runs here. Says what it did, undefined when nothing was left;
   * never touches a migration this process is running. A copy stopped for a switchover whose
   * migration then failed runs here again, unless `opts.keepStopped` (a group-commit journal
   * still has to decide it: the copy is left paused, completed or not).
   */
  settleOrphanedMigration?(vm: string, opts?: SettleOptions): Promise<string | undefined>;
}
