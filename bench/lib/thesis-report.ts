/**
 * From measured moves (test/testbed/run.ts) to what bench:thesis prints: one row of figures per
 * run, a Markdown table of medians (min-max) per experiment, strategy and link with the thesis'
 * figures and the ratio thesis/ours, and the Figure-3.9-style timeline of a run.
 */
import { EXPERIMENT, type ExperimentName } from "../../test/testbed/experiments";
import { outages } from "../../test/testbed/metrics";
import type { RunResult } from "../../test/testbed/run";
import type { TimelineData } from "../../test/testbed/svg";

/** The figures of one run that the table aggregates; undefined where the run has no such probe. */
export interface RunFigures {
  /** Longest group interruption. */
  interruptionMs: number;
  /** Total time any probe was failing. */
  anyDownMs: number;
  pingsLost: number;
  /** The thesis' measure: the worst guest's lost pings times the ping interval. */
  pingLossMs: number;
  longestPingGapMs: number;
  tcpStallMs?: number;
  udpZeroMs?: number;
  /** Worst VM of the group. */
  downtimeMs?: number;
  stopToResumeMs?: number;
  wallMs: number;
  mib?: number;
  /** Copied disks' bytes, all VMs (BENCH_DISKS=1). */
  diskMib?: number;
  sipArmingMs?: number;
  ackMs?: number;
  byeMs?: number;
}

const maxOf = (xs: number[]): number | undefined => (xs.length ? Math.max(...xs) : undefined);

export function runFigures(r: RunResult): RunFigures {
  const probes = r.figures.probes;
  const pings = probes.filter((p) => p.kind === "ping");
  const completed = r.report.vms.flatMap((v) => (v.outcome === "completed" ? [v] : []));
  const f: RunFigures = {
    interruptionMs: r.figures.interruptionMs,
    anyDownMs: r.figures.anyDownMs,
    pingsLost: maxOf(pings.map((p) => p.lost ?? 0)) ?? 0,
    pingLossMs: maxOf(r.probes.filter((p) => p.kind === "ping").map((p) => (p.lost ?? 0) * p.intervalMs)) ?? 0,
    longestPingGapMs: maxOf(pings.map((p) => p.longestGapMs)) ?? 0,
    wallMs: r.wallMs,
  };
  const tcp = maxOf(probes.filter((p) => p.kind === "tcp").map((p) => p.longestGapMs));
  if (tcp !== undefined) f.tcpStallMs = tcp;
  const udp = maxOf(probes.flatMap((p) => (p.zeroBandwidthMs !== undefined ? [p.zeroBandwidthMs] : [])));
  if (udp !== undefined) f.udpZeroMs = udp;
  const down = maxOf(completed.map((v) => v.downtimeMs));
  if (down !== undefined) f.downtimeMs = down;
  const s2r = maxOf(r.vms.flatMap((v) => (v.stopToResumeMs !== undefined ? [v.stopToResumeMs] : [])));
  if (s2r !== undefined) f.stopToResumeMs = Math.round(s2r);
  if (completed.length) f.mib = completed.reduce((s, v) => s + v.bytes, 0) / 2 ** 20;
  const disk = completed.reduce((s, v) => s + (v.diskBytes ?? 0), 0);
  if (disk > 0) f.diskMib = disk / 2 ** 20;
  if (r.report.phases) {
    f.sipArmingMs = r.report.phases.arming;
    if (r.report.phases.ackToFirstMigrate !== undefined) f.ackMs = r.report.phases.ackToFirstMigrate;
    if (r.report.phases.lastCompletionToByeOk !== undefined) f.byeMs = r.report.phases.lastCompletionToByeOk;
  }
  return f;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** "median (min-max)" of the runs that have the figure; "-" when none has it. */
function cell(runs: readonly RunFigures[], key: keyof RunFigures, digits = 0): string {
  const xs = runs.flatMap((r) => (r[key] !== undefined ? [r[key] as number] : []));
  if (!xs.length) return "-";
  const f = (v: number) => v.toFixed(digits);
  return `${f(median(xs))} (${f(Math.min(...xs))}-${f(Math.max(...xs))})`;
}

function ratio(thesisMs: number, oursMs: number): string {
  if (oursMs <= 0) return `>${Math.round(thesisMs / 5)}x`; // nothing the 5 ms probes could see
  const x = thesisMs / oursMs;
  return x >= 10 ? `${Math.round(x)}x` : `${x.toFixed(1)}x`;
}

export interface Group {
  experiment: ExperimentName;
  strategy: string;
  linkMbit: number;
  runs: RunFigures[];
  violations: string[];
}

const linkName = (mbit: number) =>
  mbit === 0 ? "unshaped" : mbit >= 1000 ? `${mbit / 1000} Gbit/s` : `${mbit} Mbit/s`;

/** The Markdown table: every figure as median (min-max) over the repeats, thesis' figure and ratio last. */
export function markdownTable(groups: readonly Group[]): string {
  const head = [
    "exp",
    "strategy",
    "inter-DC link",
    "n",
    "longest group interruption ms",
    "total any-probe-down ms",
    "pings lost (5 ms)",
    "longest ping gap ms",
    "TCP echo stall ms",
    "UDP zero-bw ms",
    "QEMU downtime ms (worst VM)",
    "STOP->RESUME ms (worst VM)",
    "move wall ms",
    "MiB moved",
    "disk MiB copied",
    "SIP INVITE->200 ms",
    "SIP ACK->1st migrate ms",
    "SIP last done->BYE 200 ms",
    "thesis: user-seen loss",
    "ratio thesis/ours",
  ];
  const rows = groups.map((g) => {
    const t = EXPERIMENT[g.experiment].thesis;
    let thesis = `${t.pingsLost} x ${t.pingIntervalMs / 1000} s ping = ${t.lossMs / 1000} s`;
    // The thesis' own measure (pings lost x interval) beside the strictest of ours (any probe down).
    let ratios =
      `pings ${ratio(t.lossMs, median(g.runs.map((r) => r.pingLossMs)))}; any probe ` +
      `${ratio(t.lossMs, median(g.runs.map((r) => r.anyDownMs)))}`;
    if (t.videoMs !== undefined) {
      thesis += `; video ${t.videoMs / 1000} s`;
      const zs = g.runs.flatMap((r) => (r.udpZeroMs !== undefined ? [r.udpZeroMs] : []));
      if (zs.length) ratios += `; video ${ratio(t.videoMs, median(zs))}`;
    }
    return [
      g.experiment,
      g.strategy,
      linkName(g.linkMbit),
      String(g.runs.length),
      cell(g.runs, "interruptionMs"),
      cell(g.runs, "anyDownMs"),
      cell(g.runs, "pingsLost"),
      cell(g.runs, "longestPingGapMs"),
      cell(g.runs, "tcpStallMs"),
      cell(g.runs, "udpZeroMs"),
      cell(g.runs, "downtimeMs"),
      cell(g.runs, "stopToResumeMs"),
      cell(g.runs, "wallMs"),
      cell(g.runs, "mib", 1),
      cell(g.runs, "diskMib", 1),
      cell(g.runs, "sipArmingMs"),
      cell(g.runs, "ackMs"),
      cell(g.runs, "byeMs"),
      thesis,
      ratios,
    ];
  });
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(head), line(head.map(() => "---")), ...rows.map(line)].join("\n") + "\n";
}

/** The timeline of one run, for svg.ts. */
export function timelineOf(r: RunResult): TimelineData {
  const from = Math.min(...r.probes.map((p) => p.startedAt));
  const to = Math.max(...r.probes.map((p) => p.stoppedAt));
  const f = runFigures(r);
  const data: TimelineData = {
    title:
      `${EXPERIMENT[r.experiment as ExperimentName].title}: ${r.strategy}, ` +
      `${linkName(r.linkMbit)}, ${r.from} -> ${r.to} (${r.migrator})`,
    subtitle:
      `longest group interruption ${f.interruptionMs} ms (any probe down ${f.anyDownMs} ms in ` +
      `all), longest ping gap ${f.longestPingGapMs} ms, ${f.pingsLost} pings lost` +
      (f.udpZeroMs !== undefined ? `, UDP zero-bandwidth ${f.udpZeroMs} ms` : "") +
      (f.tcpStallMs !== undefined ? `, TCP stall ${f.tcpStallMs} ms` : ""),
    from,
    to,
    link: r.link,
    probes: r.probes.map((p) => ({ name: p.name, outages: outages(p) })),
    vms: r.vms.map((v) => v.marks),
  };
  if (r.udp) data.udp = r.udp;
  return data;
}
