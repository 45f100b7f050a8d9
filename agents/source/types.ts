/** The source agent's vocabulary, shared by the agent and its calls: what a move is asked, observes and reports. */
import type { MigrationProgress } from "../../lib/hypervisor/driver";
import type { Host } from "../../lib/hypervisor/host";
import type { Logger } from "../../lib/log/logger";
import type { CompressChoice } from "../../lib/plan/compress";
import type { DedupChoice } from "../../lib/plan/dedup";
import type { DedupStats } from "../../lib/dedup/encoder";
import type { VmOutcome } from "../../lib/plan/execute";
import type { SipBackend } from "../../lib/sip/backend";
import type { Answer, Offer, Outcome, Policy, Report, VmStatus } from "../../nrdl/types";

export interface MigrateRequest {
  /** Destination SIP URI, e.g. sip:dc2@10.10.10.67 */
  to: string;
  /** Either VM names from the local inventory (with `policy`), or a complete offer (plan file). */
  vms?: string[];
  policy?: Policy;
  plan?: Offer;
  /**
   * Stream reductions to offer (nrdl/SPEC.md 5.7): "auto" (the default) offers what this host's
   * drivers can do when the policy caps bandwidth; "none" the plain stream; a method, that one alone.
   */
  compress?: CompressChoice;
  /**
   * Group page dedup to offer (nrdl/SPEC.md 5.8): "auto" (the default) when the policy caps bandwidth
   * and the move is a group commit; "on" whenever it is a group commit (refused otherwise); "off".
   */
  dedup?: DedupChoice;
  /** Ctrl-C / console Abort: CANCEL before the answer, abort migrations after it. */
  signal?: AbortSignal;
}

export type SourcePhase = "inviting" | "armed" | "migrating" | "closing" | "done";

export interface SourceEvents {
  onPhase?(phase: SourcePhase, detail?: string): void;
  onAnswer?(answer: Answer): void;
  onStart?(vm: string): void;
  onProgress?(p: MigrationProgress): void;
  onOutcome?(o: VmOutcome): void;
  onSwitchover?(vms: string[]): void;
}

export interface VmSummary {
  vm: string;
  state: VmStatus["state"];
  /** Where the VM runs now. */
  host: string;
  totalMs?: number;
  downtimeMs?: number;
  transferredBytes?: number;
  diskTransferredBytes?: number;
  /** Where the VM's copied disks live now (the image file on its host), when it has any. */
  disks?: string;
  reason?: string;
}

export interface MigrateSummary {
  migrationId: string;
  outcome: Outcome;
  vms: VmSummary[];
  /** The destination's own report (body of its 200 to our BYE), when it answered. */
  destinationReport?: Report;
  /** SIP phases in ms: INVITE->200 (arming), 200->first migrate, last completion->BYE's 200. */
  phases: { arming: number; ackToFirstMigrate?: number; lastCompletionToByeOk?: number };
  /**
   * Whole-group switchover: the group's pause as the source's QEMUs measured it, from the first VM
   * stopped to the last one's end of downtime (its state loaded at the destination).
   */
  groupDowntimeMs?: number;
  /** Group page dedup, when the destination agreed to it for some VM: the dialog's index and relays. */
  dedup?: DedupStats;
}

export interface SourceOptions {
  sip: SipBackend;
  host: Host;
  /** This host's name or URI, written into reports for VMs that stayed here. */
  hostName: string;
  logger: Logger;
  /** Stream reductions a request that does not say offers (config `defaults.compress`; "auto" when absent). */
  compress?: CompressChoice;
  /** Group page dedup a request that does not say offers (config `defaults.dedup`; "auto" when absent). */
  dedup?: DedupChoice;
  /** This host's cap of a dialog's dedup index, in pages (migration.dedupIndexPages; 0 offers none). */
  dedupIndexPages?: number;
  /** CANCEL an INVITE with no final answer after this long (the destination crashed while arming). */
  answerTimeoutS?: number;
  /** Vets a 3xx redirect's target before the INVITE follows it (security.destinations): a reason refuses it. */
  redirectAllowed?: (target: string) => string | undefined;
  /**
   * The migration networks (CIDRs) where a destination's answer may put its listeners besides the
   * address it was called on (security.destinations' migrationNetworks); none when absent.
   */
  migrationNetworks?: (target: string) => readonly string[];
  /** How long a broken post-copy keeps trying to recover (timers.postcopyRecoveryS; driver default 30 s). */
  postcopyRecoveryS?: number;
  /**
   * Where the source journals groups stopped under group commit (nrdl/SPEC.md 5.6). Without it the
   * source does not offer group commit: a group it stopped could not be settled after a crash.
   */
  stateDir?: string;
}
