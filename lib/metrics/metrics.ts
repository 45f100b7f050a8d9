/**
 * Prometheus metrics of an agent (prom-client, a registry of its own): dialogs by outcome and
 * status, per-VM migration time and downtime, bytes moved, armed listeners, SIP messages and
 * retransmissions (counted from the backend's trace of every message), refusals by reason.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { TraceEvent } from "../sip/backend";

export interface VmMoved {
  totalMs?: number;
  downtimeMs?: number;
  transferredBytes?: number;
}

/** Refusal reasons as a small fixed set (label values must not grow with VM names or free text). */
export function refusalReason(status: number): string {
  const known: Record<number, string> = {
    400: "invalid_nrdl",
    401: "unauthenticated",
    403: "forbidden",
    408: "timeout",
    415: "not_nrdl",
    486: "busy",
    487: "cancelled",
    488: "not_acceptable",
    500: "arming_failed",
    503: "overload",
  };
  return known[status] ?? `status_${status}`;
}

/** The methods an agent speaks (RFC 3261, 3262, 3311, 3428, 3515, 6086, 6665): any other token is "other". */
const METHODS = new Set([
  "INVITE",
  "ACK",
  "BYE",
  "CANCEL",
  "OPTIONS",
  "REGISTER",
  "INFO",
  "MESSAGE",
  "PRACK",
  "UPDATE",
  "SUBSCRIBE",
  "NOTIFY",
  "REFER",
]);

/** A label from the wire: a message's method, from a fixed set (a stranger's token must not add a series). */
export function methodLabel(token: string | undefined): string {
  if (token === undefined) return "unknown";
  return METHODS.has(token) ? token : "other";
}

/** A response's status code as a label: 100-699, the codes SIP defines; anything else "other". */
export function statusLabel(code: string): string {
  const n = Number(code);
  return n >= 100 && n <= 699 ? code : "other";
}

/** Messages remembered for spotting retransmissions: enough for Timer B/F, bounded under a flood. */
const SEEN_MAX = 5000;

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly dialogs: Counter<"outcome" | "status">;
  private readonly refusals: Counter<"reason">;
  private readonly migrationSeconds: Histogram;
  private readonly downtimeSeconds: Histogram;
  private readonly bytes: Counter;
  private readonly armed: Gauge;
  private readonly sip: Counter<"direction" | "kind" | "method" | "status">;
  private readonly retransmissions: Counter<"direction" | "method">;
  /** Via branch + CSeq of recent messages, to tell a retransmission from a new request. */
  private readonly seen = new Map<string, number>();

  constructor(readonly role: "destination" | "console") {
    this.registry.setDefaultLabels({ role });
    collectDefaultMetrics({ register: this.registry, prefix: "sip_teleport_process_" });
    const registers = [this.registry];
    this.dialogs = new Counter({
      name: "sip_teleport_dialogs_total",
      help: "Migration dialogs ended, by outcome (completed, partial, failed, refused, cancelled) and SIP status",
      labelNames: ["outcome", "status"],
      registers,
    });
    this.refusals = new Counter({
      name: "sip_teleport_refusals_total",
      help: "Offers refused, by reason",
      labelNames: ["reason"],
      registers,
    });
    this.migrationSeconds = new Histogram({
      name: "sip_teleport_migration_seconds",
      help: "Total time of each completed VM migration",
      buckets: [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600],
      registers,
    });
    this.downtimeSeconds = new Histogram({
      name: "sip_teleport_downtime_seconds",
      help: "Downtime (guest paused) of each completed VM migration",
      buckets: [0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5],
      registers,
    });
    this.bytes = new Counter({
      name: "sip_teleport_migrated_bytes_total",
      help: "Bytes moved by completed VM migrations",
      registers,
    });
    this.armed = new Gauge({
      name: "sip_teleport_armed_listeners",
      help: "Migration listeners armed now (destination)",
      registers,
    });
    this.sip = new Counter({
      name: "sip_teleport_sip_messages_total",
      help: "SIP messages sent and received, by kind, method and status (responses)",
      labelNames: ["direction", "kind", "method", "status"],
      registers,
    });
    this.retransmissions = new Counter({
      name: "sip_teleport_sip_retransmissions_total",
      help: "SIP messages seen again with the same Via branch and CSeq (retransmissions)",
      labelNames: ["direction", "method"],
      registers,
    });
  }

  dialogEnded(outcome: string, status: number): void {
    this.dialogs.inc({ outcome, status: String(status) });
  }

  refused(status: number): void {
    this.dialogEnded("refused", status);
    this.refusals.inc({ reason: refusalReason(status) });
  }

  moved(vm: VmMoved): void {
    if (vm.totalMs !== undefined) this.migrationSeconds.observe(vm.totalMs / 1000);
    if (vm.downtimeMs !== undefined) this.downtimeSeconds.observe(vm.downtimeMs / 1000);
    if (vm.transferredBytes !== undefined) this.bytes.inc(vm.transferredBytes);
  }

  armedChanged(delta: number): void {
    this.armed.inc(delta);
  }

  /** Count one traced SIP message (the backend's onTrace). */
  observe(e: TraceEvent): void {
    const first = e.message.slice(0, e.message.indexOf("\r\n")).trim();
    const cseq = /^CSeq:\s*(\d+)\s+(\S+)/im.exec(e.message);
    const method = methodLabel(cseq?.[2]);
    const response = /^SIP\/2\.0 (\d{3})/.exec(first);
    const kind = response ? "response" : "request";
    this.sip.inc({ direction: e.direction, kind, method, status: response ? statusLabel(response[1]) : "" });
    const branch = /^(?:Via|v):[^\r\n]*;branch=([^;,\s]+)/im.exec(e.message)?.[1];
    if (!branch || !cseq) return;
    const key = `${e.direction} ${first} ${branch} ${cseq[1]} ${method}`;
    if (this.seen.has(key)) this.retransmissions.inc({ direction: e.direction, method });
    this.seen.delete(key); // re-inserted last: the Map's order is then oldest first
    this.seen.set(key, e.at);
    // Keep the last minute or so (retransmissions end after Timer B/F, 32 s), at most SEEN_MAX: oldest go first.
    for (const [k, at] of this.seen) {
      if (at >= e.at - 64_000 && this.seen.size <= SEEN_MAX) break;
      this.seen.delete(k);
    }
  }
}
