/**
 * From measured moves (test/testbed/run.ts) to what bench:thesis prints: one row of figures per
 * run, a Markdown table of medians (min-max) per experiment, strategy and link with the thesis'
 * figures and the ratio thesis/ours, and the Figure-3.9-style timeline of a run.
 */
import { EXPERIMENT, type ExperimentName } from "../../test/testbed/experiments";
import { interruptionsByPause, outages } from "../../test/testbed/metrics";
import type { RunResult } from "../../test/testbed/run";
import type { TimelineData } from "../../test/testbed/svg";

/** The figures of one run that the table aggregates; undefined where the run has no such probe. */
export interface RunFigures {
  /** Longest group interruption. */
  interruptionMs: number;
  /** The longest interruption overlapping a VM's pause (its STOP to its RESUME), and the longest overlapping none. */
  atPauseMs?: number;
  elsewhereMs?: number;
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
  /** From QEMU's events (run.ts SwitchoverTimes): the group's STOPs and RESUMEs. */
  stopSpreadMs?: number;
  stopToLastResumeMs?: number;
  stopToLastPreSwitchoverMs?: number;
  stopToLastCompletedMs?: number;
  lastCompletedToFirstResumeMs?: number;
  resumeSpreadMs?: number;
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
  // a VM that did not resume at the destination (an aborted move runs on at the source): its STOP alone
  const pauses = r.vms.flatMap(({ marks: m }) =>
    m.switchover !== undefined ? [{ from: m.switchover, to: m.end ?? m.switchover }] : [],
  );
  if (pauses.length) Object.assign(f, interruptionsByPause(r.figures.interruptions, pauses));
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
  if (r.switchover) {
    const { switchover: t } = r;
    f.stopSpreadMs = t.stopSpreadMs;
    f.stopToLastResumeMs = t.stopToLastResumeMs;
    f.resumeSpreadMs = t.resumeSpreadMs;
    if (t.stopToLastPreSwitchoverMs !== undefined) f.stopToLastPreSwitchoverMs = t.stopToLastPreSwitchoverMs;
    if (t.stopToLastCompletedMs !== undefined) f.stopToLastCompletedMs = t.stopToLastCompletedMs;
    if (t.lastCompletedToFirstResumeMs !== undefined) f.lastCompletedToFirstResumeMs = t.lastCompletedToFirstResumeMs;
  }
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

/** "median (min-max)" of the runs that have the figure (the value alone for one); "-" when none has it. */
function cell(runs: readonly RunFigures[], key: keyof RunFigures, digits = 0): string {
  const xs = runs.flatMap((r) => (r[key] !== undefined ? [r[key] as number] : []));
  if (!xs.length) return "-";
  const f = (v: number) => v.toFixed(digits);
  const [lo, hi] = [Math.min(...xs), Math.max(...xs)];
  if (xs.length === 1) return f(lo); // one repeat: no range to show
  return `${f(median(xs))} (${f(lo)}${lo < 0 ? " to " : "-"}${f(hi)})`; // "to": a dash would read as a sign
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
  /** Who moved it: "sip" (the agents) or "direct" (QMP from the bench, no SIP). */
  migrator: string;
  runs: RunFigures[];
  violations: string[];
}

const linkName = (mbit: number) =>
  mbit === 0 ? "unshaped" : mbit >= 1000 ? `${mbit / 1000} Gbit/s` : `${mbit} Mbit/s`;

/** What a table cell shows of one group: figures as median (min-max), [key, digits]. */
const COLUMNS: Array<[string, keyof RunFigures, number]> = [
  ["longest group interruption ms", "interruptionMs", 0],
  ["interruption at a pause ms", "atPauseMs", 0],
  ["interruption elsewhere ms", "elsewhereMs", 0],
  ["total any-probe-down ms", "anyDownMs", 0],
  ["pings lost (5 ms)", "pingsLost", 0],
  ["longest ping gap ms", "longestPingGapMs", 0],
  ["TCP echo stall ms", "tcpStallMs", 0],
  ["UDP zero-bw ms", "udpZeroMs", 0],
  ["QEMU downtime ms (worst VM)", "downtimeMs", 0],
  ["STOP->RESUME ms (worst VM)", "stopToResumeMs", 0],
  ["STOP spread ms (first->last source STOP)", "stopSpreadMs", 1],
  ["first STOP->last RESUME ms", "stopToLastResumeMs", 1],
  ["first STOP->last pre-switchover ms", "stopToLastPreSwitchoverMs", 1],
  ["first STOP->last source completed ms", "stopToLastCompletedMs", 1],
  ["last completed->first RESUME ms", "lastCompletedToFirstResumeMs", 1],
  ["first->last RESUME ms", "resumeSpreadMs", 1],
  ["move wall ms", "wallMs", 0],
  ["MiB moved", "mib", 1],
  ["disk MiB copied", "diskMib", 1],
  ["SIP INVITE->200 ms", "sipArmingMs", 0],
  ["SIP ACK->1st migrate ms", "ackMs", 0],
  ["SIP last done->BYE 200 ms", "byeMs", 0],
];

/** The groups of one experiment, strategy and link, one per migrator, in the order the migrators are given. */
function rowsOf(groups: readonly Group[], migrators: readonly string[]): Group[][] {
  const rows = new Map<string, Group[]>();
  for (const g of groups) {
    const key = `${g.experiment}|${g.strategy}|${g.linkMbit}`;
    rows.set(key, [...(rows.get(key) ?? []), g]);
  }
  const rank = (m: string) => (migrators.includes(m) ? migrators.indexOf(m) : migrators.length);
  return [...rows.values()].map((gs) => [...gs].sort((a, b) => rank(a.migrator) - rank(b.migrator)));
}

/**
 * The Markdown table: a row per experiment, strategy and link; with several migrators each cell holds
 * theirs side by side ("SIP / direct"); every figure as median (min-max) over the repeats, thesis' figure
 * and ratio last.
 */
export function markdownTable(groups: readonly Group[], migrators: readonly string[] = ["sip"]): string {
  const head = ["exp", "strategy", "inter-DC link", "n", ...COLUMNS.map(([h]) => h), "thesis: user-seen loss"];
  head.push("ratio thesis/ours");
  const rows = rowsOf(groups, migrators).map((gs) => {
    const g0 = gs[0];
    const each = (f: (g: Group) => string) => gs.map(f).join(" / ");
    const t = EXPERIMENT[g0.experiment].thesis;
    let thesis = `${t.pingsLost} x ${t.pingIntervalMs / 1000} s ping = ${t.lossMs / 1000} s`;
    if (t.videoMs !== undefined) thesis += `; video ${t.videoMs / 1000} s`;
    // The thesis' own measure (pings lost x interval) beside the strictest of ours (any probe down).
    const ratios = each((g) => {
      let r =
        `pings ${ratio(t.lossMs, median(g.runs.map((x) => x.pingLossMs)))}; any probe ` +
        `${ratio(t.lossMs, median(g.runs.map((x) => x.anyDownMs)))}`;
      const zs = g.runs.flatMap((x) => (x.udpZeroMs !== undefined ? [x.udpZeroMs] : []));
      if (t.videoMs !== undefined && zs.length) r += `; video ${ratio(t.videoMs, median(zs))}`;
      return r;
    });
    return [
      g0.experiment,
      g0.strategy,
      linkName(g0.linkMbit),
      each((g) => String(g.runs.length)),
      ...COLUMNS.map(([, key, digits]) => each((g) => cell(g.runs, key, digits))),
      thesis,
      ratios,
    ];
  });
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(head), line(head.map(() => "---")), ...rows.map(line)].join("\n") + "\n";
}

/** Issue 24's targets for the switchover strategy, unshaped (medians), each line "ok" or "MISSED". */
export function switchoverTargets(groups: readonly Group[], migrators: readonly string[]): string[] {
  const lines: string[] = [];
  const med = (g: Group | undefined, key: keyof RunFigures): number | undefined => {
    const xs = (g?.runs ?? []).flatMap((r) => (r[key] !== undefined ? [r[key] as number] : []));
    return xs.length ? median(xs) : undefined;
  };
  const check = (what: string, value: number | undefined, limit: number | undefined, strict = false) => {
    if (value === undefined || limit === undefined) return `${what}: not measured`;
    const ok = strict ? value < limit : value <= limit;
    return `${what}: ${value.toFixed(1)} ${strict ? "<" : "<="} ${limit.toFixed(1)} ${ok ? "ok" : "MISSED"}`;
  };
  for (const [exp, limitMs] of [
    ["exp2", 100],
    ["exp3", 150],
  ] as const)
    for (const m of migrators) {
      const find = (strategy: string) =>
        groups.find((g) => g.experiment === exp && g.strategy === strategy && g.linkMbit === 0 && g.migrator === m);
      const sw = find("switchover");
      if (!sw) continue;
      const seq = find("sequential");
      const inter = med(sw, "interruptionMs");
      const parts = [check("longest interruption", inter, limitMs)];
      // what the stop itself costs, beside a longest interruption that may lie elsewhere in the move
      parts.push(check("(the one at the pause)", med(sw, "atPauseMs"), limitMs));
      if (exp === "exp2") parts.push(check("any-probe-down", med(sw, "anyDownMs"), inter && inter * 1.3));
      if (seq) {
        parts.push(check("interruption vs sequential", inter, med(seq, "interruptionMs"), true));
        parts.push(check("any-probe-down vs sequential", med(sw, "anyDownMs"), med(seq, "anyDownMs"), true));
      }
      parts.push(check("STOP spread", med(sw, "stopSpreadMs"), 10));
      if (exp === "exp2") parts.push(check("first STOP->last RESUME", med(sw, "stopToLastResumeMs"), 40));
      lines.push(`${exp} switchover, ${m}: ${parts.join("; ")}`);
    }
  return lines;
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
