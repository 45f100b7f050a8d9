/**
 * One measured move of an experiment's whole group between the data centers: probes from the
 * user before, during and after; QMP events from both ends; the inter-DC link sampled every
 * 100 ms; then the figures and the invariants (each guest answers from the destination only,
 * and its uptime kept counting, so it was moved and not rebooted). Guests stay booted between
 * runs and move back and forth, so a benchmark pays the boot once per experiment.
 */
import type { DedupStats } from "../../lib/dedup/encoder";
import type { CompressChoice } from "../../lib/plan/compress";
import type { DedupChoice } from "../../lib/plan/dedup";
import fs from "node:fs";
import path from "node:path";
import type { Policy } from "../../nrdl/types";
import { hostAddress } from "./experiments";
import type { Lab, RecordedEvent } from "./lab";
import { BUCKET_MS, type GroupFigures, groupFigures, udpBuckets } from "./metrics";
import type { HostName } from "./network";
import { type Probe, type ProbeRecord, startPing, startTcpEcho, startUdpStream } from "./probes";
import type { VmMarks } from "./svg";

/** A probe still silent this long when it stops never recovered. */
const UNRECOVERED_MS = 500;

export interface MoveRequest {
  from: HostName;
  to: HostName;
  policy: Policy;
  /** What the agents are asked to offer (`migrate --compress`, `--dedup`); absent: their defaults. */
  reductions?: { compress: CompressChoice; dedup: DedupChoice };
}

export type VmReport =
  | { vm: string; outcome: "completed"; totalMs: number; downtimeMs: number; bytes: number; diskBytes?: number }
  | { vm: string; outcome: "failed" | "aborted"; reason: string };

export interface MigrationReport {
  vms: VmReport[];
  /** The dialog's dedup index, when the agents deduplicated (their summary's). */
  dedup?: DedupStats;
  /** SIP phases (ms), when the move went through the agents. */
  phases?: { arming: number; ackToFirstMigrate?: number; lastCompletionToByeOk?: number };
}

/** Who moves the group: direct QMP calls, or the agents over SIP. */
export interface Migrator {
  readonly name: string;
  migrate(lab: Lab, req: MoveRequest): Promise<MigrationReport>;
}

export interface VmRun {
  vm: string;
  marks: VmMarks;
  /** QMP STOP on the source to RESUME on the destination. */
  stopToResumeMs?: number;
  uptimeBefore?: number;
  uptimeAfter?: number;
  /** Hosts running the VM after the move. */
  runningOn: HostName[];
}

/**
 * Where a group's interruption goes, from QEMU's own timestamps (ms): first source STOP to last
 * source STOP (spread) and to the last destination RESUME, split into the rest's transfer (first
 * STOP -> last MIGRATION completed at the source), the destination's wait (-> first RESUME;
 * negative when a VM ran before another arrived) and its resumes (first -> last RESUME).
 */
export interface SwitchoverTimes {
  stopSpreadMs: number;
  stopToLastResumeMs: number;
  /** Switchover strategy: to the last source pre-switchover (every VM's dirty set sent; the rest waits). */
  stopToLastPreSwitchoverMs?: number;
  stopToLastCompletedMs?: number;
  lastCompletedToFirstResumeMs?: number;
  resumeSpreadMs: number;
}

export interface RunResult {
  experiment: string;
  migrator: string;
  strategy: Policy["strategy"];
  /** Inter-DC shaping in Mbit/s; 0 = none. */
  linkMbit: number;
  from: HostName;
  to: HostName;
  startedAt: number;
  /** Wall time of the migrator's call (SIP dialog included for the agents). */
  wallMs: number;
  report: MigrationReport;
  vms: VmRun[];
  figures: GroupFigures;
  /** Undefined unless every VM has a source STOP and a destination RESUME. */
  switchover?: SwitchoverTimes;
  /** Every invariant that failed, in words; empty when the move was clean. */
  violations: string[];
  link: Array<{ t: number; mbit: number }>;
  /** Bytes the inter-DC link carried from the first sample to the last (both directions, probes too). */
  linkBytes: number;
  udp?: { startedAt: number; bucketMs: number; bytes: number[] };
  probes: ProbeRecord[];
  events: RecordedEvent[];
}

export interface RunOptions {
  linkMbit: number;
  /** Probing before the move and after it. */
  warmupMs?: number;
  tailMs?: number;
}

/** Every probe of the experiment; when one cannot start, the ones already running are stopped. */
async function startProbes(lab: Lab): Promise<Probe[]> {
  const user = lab.net.exec("user");
  const probes: Probe[] = [];
  try {
    for (const g of lab.exp.guests) {
      const ip = hostAddress(g);
      if (g.probes.includes("ping")) probes.push(startPing(user, `ping ${g.name}`, ip));
      if (g.probes.includes("tcp")) probes.push(await startTcpEcho(user, lab.dir, `tcp ${g.name}`, ip));
      if (g.probes.includes("udp"))
        probes.push(await startUdpStream(user, lab.dir, `udp ${g.name}`, ip, { sourcePort: 40007 }));
    }
    return probes;
  } catch (err) {
    await Promise.all(probes.map((p) => p.stop()));
    throw err;
  }
}

/** The inter-DC link's throughput (Mbit/s) per sampling interval, until stopped. */
function sampleLink(lab: Lab, everyMs: number): { stop(): Array<{ t: number; mbit: number }>; bytes(): number } {
  const samples: Array<{ t: number; mbit: number }> = [];
  let first: number | undefined;
  let last: { t: number; bytes: number } | undefined;
  const watcher = lab.net.watchInterDcBytes(everyMs, (t, bytes) => {
    if (last && t > last.t) samples.push({ t, mbit: ((bytes - last.bytes) * 8) / ((t - last.t) * 1000) });
    first ??= bytes;
    last = { t, bytes };
  });
  return {
    stop() {
      watcher.stop();
      return samples;
    },
    bytes: () => (last && first !== undefined ? last.bytes - first : 0),
  };
}

/** Migration start, switchover and end of a VM from the QMP events of this run. */
function marksOf(events: readonly RecordedEvent[], vm: string, from: HostName, to: HostName): VmMarks {
  const mine = events.filter((e) => e.vm === vm);
  const start = mine.find((e) => e.host === from && e.event === "MIGRATION" && e.data.status === "setup")?.t;
  const stops = mine.filter((e) => e.host === from && e.event === "STOP");
  const switchover = stops.length ? stops[stops.length - 1].t : undefined;
  const end = mine.find((e) => e.host === to && e.event === "RESUME")?.t;
  const marks: VmMarks = { name: vm };
  if (start !== undefined) marks.start = start;
  if (switchover !== undefined) marks.switchover = switchover;
  if (end !== undefined) marks.end = end;
  return marks;
}

/** The group's STOP/RESUME timings, when every VM stopped at the source and resumed at the destination. */
export function switchoverTimes(
  events: readonly RecordedEvent[],
  vms: readonly VmRun[],
  from: HostName,
): SwitchoverTimes | undefined {
  const stops = vms.map((v) => v.marks.switchover);
  const resumes = vms.map((v) => v.marks.end);
  if (!vms.length || stops.includes(undefined) || resumes.includes(undefined)) return undefined;
  const firstStop = Math.min(...(stops as number[]));
  const [firstResume, lastResume] = [Math.min(...(resumes as number[])), Math.max(...(resumes as number[]))];
  const ms = (x: number) => Math.round(x * 10) / 10; // QEMU stamps microseconds; 0.1 ms is plenty
  const t: SwitchoverTimes = {
    stopSpreadMs: ms(Math.max(...(stops as number[])) - firstStop),
    stopToLastResumeMs: ms(lastResume - firstStop),
    resumeSpreadMs: ms(lastResume - firstResume),
  };
  // each VM's last such MIGRATION event at the source: its switchover's (earlier moves' are not in these events)
  const lastAtSource = (status: string) =>
    vms.map((v) =>
      events
        .filter((e) => e.vm === v.vm && e.host === from && e.event === "MIGRATION" && e.data.status === status)
        .reduce<number | undefined>((last, e) => Math.max(last ?? e.t, e.t), undefined),
    );
  const preSwitchover = lastAtSource("pre-switchover");
  if (!preSwitchover.includes(undefined))
    t.stopToLastPreSwitchoverMs = ms(Math.max(...(preSwitchover as number[])) - firstStop);
  const completed = lastAtSource("completed");
  if (!completed.includes(undefined)) {
    const lastCompleted = Math.max(...(completed as number[]));
    t.stopToLastCompletedMs = ms(lastCompleted - firstStop);
    t.lastCompletedToFirstResumeMs = ms(firstResume - lastCompleted);
  }
  return t;
}

/** Move the lab's whole group `from` -> `to` once and measure it. */
export async function measureMove(
  lab: Lab,
  migrator: Migrator,
  req: MoveRequest,
  opts: RunOptions,
): Promise<RunResult> {
  const { from, to } = req;
  await lab.net.shapeInterDc(opts.linkMbit);
  const uptimes = () =>
    Promise.all(lab.exp.guests.map(async (g) => [g.name, await lab.uptime(g)] as const)).then((e) => new Map(e));
  const uptimeBefore = await uptimes();
  // The destination's event sockets: drop files left by a QEMU that moved away, then watch for the new one.
  for (const g of lab.exp.guests) {
    fs.rmSync(path.join(lab.runDir(to), `${g.name}.ev`), { force: true });
    lab.watch(to, g.name);
  }
  const eventsFrom = lab.events.length;
  const probes = await startProbes(lab);
  const link = sampleLink(lab, BUCKET_MS);
  const tailMs = opts.tailMs ?? 1500;
  let startedAt = Date.now();
  let report: MigrationReport | undefined;
  let records: ProbeRecord[] = [];
  let linkSamples: Array<{ t: number; mbit: number }> = [];
  let wallMs = 0;
  try {
    await new Promise((r) => setTimeout(r, opts.warmupMs ?? 1000));
    startedAt = Date.now();
    report = await migrator.migrate(lab, req);
    wallMs = Date.now() - startedAt;
  } finally {
    await new Promise((r) => setTimeout(r, tailMs));
    records = await Promise.all(probes.map((p) => p.stop()));
    linkSamples = link.stop();
  }
  const events = lab.events.slice(eventsFrom);

  const violations: string[] = [];
  const vms: VmRun[] = [];
  const uptimeAfter = await uptimes();
  for (const g of lab.exp.guests) {
    const marks = marksOf(events, g.name, from, to);
    const runningOn = lab.runningOn(g.name);
    const run: VmRun = { vm: g.name, marks, runningOn };
    if (marks.switchover !== undefined && marks.end !== undefined) run.stopToResumeMs = marks.end - marks.switchover;
    const before = uptimeBefore.get(g.name);
    const after = uptimeAfter.get(g.name);
    if (before !== undefined) run.uptimeBefore = before;
    if (after !== undefined) run.uptimeAfter = after;
    if (runningOn.length !== 1 || runningOn[0] !== to)
      violations.push(`${g.name} runs on [${runningOn.join(", ")}], expected only ${to}`);
    if (before === undefined || after === undefined)
      violations.push(`${g.name} did not answer HTTP ${before === undefined ? "before" : "after"} the move`);
    else if (after <= before)
      violations.push(`${g.name} uptime went from ${before}s to ${after}s: rebooted, not moved`);
    vms.push(run);
  }
  for (const r of report.vms) if (r.outcome !== "completed") violations.push(`${r.vm} ${r.outcome}: ${r.reason}`);
  // guests with copied disks: their writer goes on at the destination, and the old images go
  violations.push(...(await lab.disksAfterMove(from, to)));
  const figures = groupFigures(records, startedAt);
  // A probe silent only for the last moments is this loaded machine not scheduling the prober
  // (every probe stops together); a guest that is really gone stays silent for the whole tail.
  // TCP is left out: after a long stall its retransmission backoff may outlast the tail, and the
  // HTTP check above already asks whether the guest serves TCP.
  for (const p of figures.probes.filter((x) => x.kind !== "tcp"))
    for (const o of p.outages.filter((x) => x.open && x.to - x.from >= UNRECOVERED_MS))
      violations.push(
        `${p.name} silent from ${o.from - startedAt} ms after the move began until it ` +
          `stopped${p.error ? ` (${p.error})` : ""}`,
      );

  const udpRec = records.find((r) => r.kind === "udp");
  const switchover = switchoverTimes(events, vms, from);
  const result: RunResult = {
    experiment: lab.exp.name,
    migrator: migrator.name,
    strategy: req.policy.strategy,
    linkMbit: opts.linkMbit,
    from,
    to,
    startedAt,
    wallMs,
    report,
    vms,
    figures,
    ...(switchover ? { switchover } : {}),
    violations,
    link: linkSamples,
    linkBytes: link.bytes(),
    probes: records,
    events,
  };
  if (udpRec) result.udp = { startedAt: udpRec.startedAt, bucketMs: BUCKET_MS, bytes: udpBuckets(udpRec) };
  return result;
}
