/**
 * What the operator sees while a host is emptied: one line per event (several dialogs run at
 * once, so no redrawn bars), progress at each quarter of a VM's copy, then the table of where
 * every VM runs. JSON lines with --json, the last one the whole report.
 */
import type { MigrationProgress } from "../../lib/hypervisor/driver";
import type { VmOutcome } from "../../lib/plan/execute";
import type { DestinationAnswer } from "./capacity-query";
import type { EvacuationEvents, EvacuationReport } from "./evacuate";
import { tableLines } from "./table";

export class EvacuationDisplay implements EvacuationEvents {
  /** Destination URI -> its host name (from its capacity answer), for shorter lines. */
  private readonly names = new Map<string, string>();
  private readonly quarter = new Map<string, number>();

  constructor(
    private readonly json: boolean,
    private readonly write: (s: string) => void = (s) => process.stdout.write(s),
  ) {}

  private say(event: string, data: Record<string, unknown>, text: string): void {
    this.write(this.json ? JSON.stringify({ event, at: new Date().toISOString(), ...data }) + "\n" : text + "\n");
  }

  private name(uri: string): string {
    return this.names.get(uri) ?? uri;
  }

  onCapacity(a: DestinationAnswer): void {
    const c = a.capacity;
    if (c) this.names.set(a.uri, c.host);
    const text = c
      ? `${c.host} (${a.uri}): ${c.memoryFreeMib} MiB memory, ${c.diskFreeMib} MiB disk, ${c.portsFree} ports, ` +
        `${c.vmsReceivable} VMs receivable`
      : `${a.uri}: no capacity (${a.status} ${a.reason}${a.problem ? `: ${a.problem}` : ""}); not used`;
    this.say("capacity", { ...a }, text);
  }

  onOffer(uri: string, vms: string[]): void {
    this.say("offer", { to: uri, vms }, `${this.name(uri)}: offering ${vms.join(", ")}`);
  }

  onRefused(uri: string, vms: string[], why: string): void {
    this.say("refused", { to: uri, vms, why }, `${this.name(uri)}: will not get ${vms.join(", ")} (${why})`);
  }

  onArmed(uri: string, detail: string): void {
    this.say("armed", { to: uri, detail }, `${this.name(uri)}: ${detail}`);
  }

  onProgress(uri: string, p: MigrationProgress): void {
    const q = Math.floor(p.progress * 4);
    if (q >= 4 || q <= (this.quarter.get(p.vm) ?? 0)) return;
    this.quarter.set(p.vm, q);
    const mib = (p.transferredBytes / 2 ** 20).toFixed(1);
    this.say("progress", { to: uri, ...p }, `${this.name(uri)}: ${p.vm} ${q * 25}% (${mib} MiB)`);
  }

  onOutcome(uri: string, o: VmOutcome): void {
    const how = o.state === "completed" ? `downtime ${o.result.downtimeMs} ms` : o.reason;
    this.say("outcome", { to: uri, ...o }, `${this.name(uri)}: ${o.vm} ${o.state} (${how})`);
  }

  onUnplaced(vms: string[], why: string): void {
    this.say("unplaced", { vms, why }, `${vms.join(", ")}: stays here, no destination can take it (${why})`);
  }

  done(report: EvacuationReport): void {
    this.write(this.json ? JSON.stringify({ event: "evacuated", ...report }) + "\n" : renderEvacuation(report));
  }
}

/** Where every VM runs now, and how it got there (or why it did not). */
export function renderEvacuation(r: EvacuationReport): string {
  const rows = r.vms.map((v) => [
    v.vm,
    v.state === "moved" ? `${v.host ?? ""} ${v.runsOn}`.trim() : `${r.host} (this host)`,
    v.state,
    v.downtimeMs !== undefined ? `${v.downtimeMs} ms` : "-",
    [
      ...(v.reductions ? [`stream: ${v.reductions.join(", ")}`] : []),
      ...v.attempts.map((a) => `tried ${a}`),
      ...(v.reason ? [v.reason] : []),
    ].join("; "),
  ]);
  const t = tableLines(["VM", "runs on", "outcome", "downtime", "note"], rows);
  const moved = r.vms.filter((v) => v.state === "moved").length;
  const running = r.vms.filter((v) => v.state !== "not running").length;
  return [
    "",
    t.head,
    ...t.rows,
    "",
    `evacuation ${r.outcome}: ${moved} of ${running} running VMs moved off ${r.host}`,
    "",
  ].join("\n");
}
