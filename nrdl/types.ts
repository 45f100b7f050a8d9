/**
 * NRDL in memory, every version this build speaks. The wire format is specified in nrdl/SPEC.md;
 * these types are its one-to-one model (attribute names camelCased). Every field is present after
 * parsing: defaults are filled in by the parser (also for vocabulary a document's version lacks),
 * so code downstream never guesses and never asks which version a document was.
 */
/** The highest NRDL version this build speaks. */
export const NRDL_VERSION = 2;
/** Every NRDL version this build parses and builds (see SPEC.md, "Versioning"). */
export const SUPPORTED_VERSIONS: readonly number[] = [1, 2];
/** Each version has its own namespace: `urn:sip-teleport:nrdl:<version>`. */
export function nrdlNamespace(version: number): string {
  return `urn:sip-teleport:nrdl:${version}`;
}
export const NRDL_MIME = "application/nrdl+xml";
/** Hard ceiling on a document's size, checked before any parsing. */
export const NRDL_MAX_BYTES = 64 * 1024;
/** The deepest the vocabulary nests: nrdl > offer > vm > depends-on (or disk; answer > armed > export). */
export const NRDL_MAX_DEPTH = 4;
/** VM names and document ids end up in command lines and file names: keep them inert. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const HYPERVISORS = ["qemu", "virtualbox", "libvirt"] as const;
export type Hypervisor = (typeof HYPERVISORS)[number];

/** Roles feed ordering: network functions (router, switch, firewall, nat) move first. */
export const ROLES = ["router", "switch", "firewall", "nat", "server", "storage", "other"] as const;
export type Role = (typeof ROLES)[number];

export const STRATEGIES = ["sequential", "parallel", "switchover"] as const;
export type Strategy = (typeof STRATEGIES)[number];

/** What makes a migration converge when the guest writes faster than the link carries (NRDL 2). */
export const CONVERGENCE = ["none", "auto-converge", "postcopy"] as const;
export type Convergence = (typeof CONVERGENCE)[number];

/**
 * Who decides that a switchover happened (NRDL 2, SPEC.md 5.6): "source", each VM runs at the
 * destination as it arrives (versions before group commit); "group", the destination holds every
 * arrived VM paused and runs all or none.
 */
export const COMMITS = ["source", "group"] as const;
export type Commit = (typeof COMMITS)[number];

/** The destination's verdict on a group (SPEC.md 5.6); "unknown" only answers a query it cannot answer. */
export const DECISION_OUTCOMES = ["commit", "abort", "unknown"] as const;
export type DecisionOutcome = (typeof DECISION_OUTCOMES)[number];

/**
 * Per-stream reductions of a VM's migration stream (NRDL 2, SPEC.md 5.7), as QEMU 7.2 does them:
 * "zstd" and "zlib", multifd channels that compress each page batch; "xbzrle", a cache of pages
 * sent that encodes a re-sent page as its difference from the copy sent before.
 */
export const COMPRESS_METHODS = ["zstd", "zlib", "xbzrle"] as const;
export type CompressMethod = (typeof COMPRESS_METHODS)[number];
/** The methods that run over multifd channels (the destination listens for `channels` connections). */
export const MULTIFD_METHODS: ReadonlySet<CompressMethod> = new Set<CompressMethod>(["zstd", "zlib"]);

/** Group page dedup in an offer (NRDL 2, SPEC.md 5.8): "on", the source can and wants it; absent or "off", not. */
export const DEDUP_MODES = ["on", "off"] as const;
export type DedupMode = (typeof DEDUP_MODES)[number];
/**
 * How the dedup relays code their links (SPEC.md 5.8): "deflate", zlib level 1 over the frames. An
 * offer lists it when its source can; an answer names it when the destination wants it.
 */
export const DEDUP_LINKS = ["deflate"] as const;
export type DedupLink = (typeof DEDUP_LINKS)[number];

export const ON_ERROR = ["abort", "continue"] as const;
export type OnError = (typeof ON_ERROR)[number];

export const VM_STATES = ["migrating", "completed", "failed", "aborted"] as const;
export type VmMigrationState = (typeof VM_STATES)[number];

export const OUTCOMES = ["completed", "partial", "failed"] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** Since NRDL 2: how a VM's disk image is stored (SPEC.md 5.1). */
export const DISK_FORMATS = ["qcow2", "raw"] as const;
export type DiskFormat = (typeof DISK_FORMATS)[number];

/** shared: same file on storage both hosts see; copy: the whole image is copied; copy-top: only the qcow2 overlay. */
export const DISK_MODES = ["copy", "shared", "copy-top"] as const;
export type DiskMode = (typeof DISK_MODES)[number];

export interface DiskSpec {
  /** The disk's name within its VM, the same on both hosts (e.g. "vda"). */
  target: string;
  /** Virtual size in bytes: the destination creates an image of exactly this size. */
  sizeBytes: number;
  format: DiskFormat;
  mode: DiskMode;
  /** copy-top: length in bytes of the backing image file at the source (the destination must hold the same). */
  backingBytes?: number;
}

export interface Policy {
  strategy: Strategy;
  /** At most this many migrations at once (1 for sequential). */
  maxParallel: number;
  /** Per-migration bandwidth cap; 0 = unlimited. */
  bandwidthMbps: number;
  downtimeLimitMs: number;
  timeoutS: number;
  onError: OnError;
  /** NRDL 2; absent means "none" (plain pre-copy). */
  convergence?: Convergence;
  /** NRDL 2, strategy switchover; absent means "source" (SPEC.md 5.6). */
  commit?: Commit;
  /**
   * NRDL 2 (SPEC.md 5.7): the stream reductions the source can apply, space-separated, in its order
   * of preference (e.g. "zstd zlib xbzrle"); absent means none is offered (today's plain stream).
   */
  compress?: string;
  /** NRDL 2 (SPEC.md 5.8): "on", the source offers group page dedup (with commit="group" only); absent: off. */
  dedup?: DedupMode;
  /** NRDL 2 (SPEC.md 5.8): with dedup="on", "deflate" when the source can deflate its dedup links. */
  dedupLink?: DedupLink;
}

export interface VmSpec {
  name: string;
  hypervisor: Hypervisor;
  role: Role;
  memoryMib: number;
  cpus: number;
  /** Names of VMs (in the same offer) that must have moved before this one. */
  dependsOn: string[];
  /** Since NRDL 2; always empty in a v1 document. */
  disks: DiskSpec[];
}

export interface Offer {
  kind: "offer";
  sourceUri: string;
  destinationUri: string;
  policy: Policy;
  vms: VmSpec[];
}

export interface Armed {
  vm: string;
  /** Where the source points its migration, e.g. "tcp:10.10.10.67:49152". */
  uri: string;
  /** One-time secret for this VM in this dialog. Never logged. */
  secret: string;
  /** Since NRDL 2: one NBD export per copied disk; always empty in a v1 document. */
  exports: DiskExport[];
  /** NRDL 2 (SPEC.md 5.7): the offered reduction this VM's stream uses; absent means the plain stream. */
  compress?: CompressMethod;
  /** NRDL 2: with a multifd method (zstd, zlib), how many channels the listener takes. */
  channels?: number;
  /** NRDL 2 (SPEC.md 5.8): "on", this VM's stream goes through the dialog's dedup index; absent: it does not. */
  dedup?: "on";
}

/** Where the source mirrors one disk: the destination's NBD server, TLS-PSK from the secret. */
export interface DiskExport {
  /** The `target` of an offered disk with mode copy or copy-top. */
  disk: string;
  /** "nbd://HOST:PORT/EXPORT" */
  uri: string;
  /** One-time secret of this VM's NBD server in this dialog. Never logged. */
  secret: string;
}

export interface Rejected {
  vm: string;
  reason: string;
}

/** 200 OK body (armed only) or 488 body (rejected, possibly with what had been armed and was disarmed). */
export interface Answer {
  kind: "answer";
  /** NRDL 2: "group" when the destination holds the group for its decision (SPEC.md 5.6); absent means "source". */
  commit?: Commit;
  /** NRDL 2 (SPEC.md 5.8): the dialog's dedup index cap in pages, when some `<armed>` says dedup="on". */
  dedupPages?: number;
  /** NRDL 2 (SPEC.md 5.8): "deflate" when the dialog's dedup links are deflated (offered by the source). */
  dedupLink?: DedupLink;
  armed: Armed[];
  rejected: Rejected[];
}

/**
 * Answer to a dry run (OPTIONS carrying an offer): what the destination would arm, without arming.
 * `accepted` lists the listener each VM would get; `rejected` why a VM would be refused.
 */
export interface Preview {
  kind: "preview";
  /** `compress`, `dedup`: the reductions an INVITE would agree to for this VM (NRDL 2), absent for none. */
  accepted: Array<{ vm: string; uri: string; compress?: CompressMethod; dedup?: "on" }>;
  rejected: Rejected[];
}

/** What a destination can receive now (answer to OPTIONS without a body, Accept: application/nrdl+xml). */
export interface Capacity {
  kind: "capacity";
  /** Host name of the destination (its config's `host`). */
  host: string;
  memoryFreeMib: number;
  diskFreeMib: number;
  portsFree: number;
  /** VMs this host defines and does not run (could be received). */
  vmsReceivable: number;
  /** Space-separated hypervisors usable on this host, e.g. "qemu libvirt". */
  hypervisors: string;
  /** Space-separated NRDL versions this build speaks, e.g. "1". */
  versions: string;
}

export interface VmStatus {
  vm: string;
  state: VmMigrationState;
  /** 0..1 */
  progress?: number;
  transferredBytes?: number;
  totalMs?: number;
  downtimeMs?: number;
  reason?: string;
  /** Since NRDL 2: the disk mirrors of this VM together, 0..1, and their bytes. */
  diskProgress?: number;
  diskTransferredBytes?: number;
  diskTotalBytes?: number;
}

/** INFO body: one or more VM status lines. */
export interface StatusReport {
  kind: "status";
  statuses: VmStatus[];
}

export interface VmResult {
  vm: string;
  state: VmMigrationState;
  /** Where the VM runs now (host URI or name). */
  host: string;
  totalMs?: number;
  downtimeMs?: number;
  transferredBytes?: number;
  reason?: string;
  /** Since NRDL 2: bytes of disk copied for this VM. */
  diskTransferredBytes?: number;
}

/** BYE body (source's view) and its 200 OK body (destination's view). */
export interface Report {
  kind: "report";
  outcome: Outcome;
  /**
   * Since NRDL 2, strategy switchover: the group's interruption, from the first VM stopped to the
   * last one's state loaded at the destination (the source's view only).
   */
  groupDowntimeMs?: number;
  results: VmResult[];
}

/** Since NRDL 2, INFO body: the post-copy link of this VM broke; the source asks for a new listener. */
export interface RecoverRequest {
  kind: "recover";
  vm: string;
}

/** Since NRDL 2, the 200 OK body to a `<recover>` INFO: where to resume, with a new one-time secret. */
export interface Recovery {
  kind: "recovery";
  vm: string;
  /** "tcp:HOST:PORT", listening for the resumed migration stream. */
  uri: string;
  /** One-time, for this recovery only. Never logged. */
  secret: string;
}

/** Since NRDL 2, group commit, INFO from the source: every VM of the group is stopped; the rest follows. */
export interface SwitchoverNotice {
  kind: "switchover";
}

/** Since NRDL 2, group commit, INFO from the source: call the group off (nothing of it may run there). */
export interface GroupAbort {
  kind: "abort";
  reason: string;
}

/**
 * Since NRDL 2, group commit: the destination's decision for the whole group. Sent by the destination
 * in an INFO once it decided, and in the 200 OK to `<abort>` and to `<decision-query>`.
 */
export interface Decision {
  kind: "decision";
  outcome: DecisionOutcome;
  reason?: string;
  /** commit: VMs (space-separated) whose arrived copy died before it ran; their source copy resumes. */
  returned?: string;
}

/** Since NRDL 2, OPTIONS outside the dialog (document id = the migration's): what did you decide? */
export interface DecisionQuery {
  kind: "decision-query";
}

export type NrdlBody =
  | Offer
  | Answer
  | StatusReport
  | Report
  | Preview
  | Capacity
  | RecoverRequest
  | Recovery
  | SwitchoverNotice
  | GroupAbort
  | Decision
  | DecisionQuery;

export interface NrdlDocument<B extends NrdlBody = NrdlBody> {
  version: number;
  /** Migration id shared by every document of one dialog. */
  id: string;
  body: B;
}

/** One validation failure: where (an XPath-like path) and what was expected. */
export interface Violation {
  path: string;
  message: string;
}
