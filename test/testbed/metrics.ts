/**
 * The user-observed figures, computed from raw probe records: pings lost, the longest gap
 * between replies, the TCP echo stall, the UDP stream's zero-bandwidth interval, and the
 * interruption of the whole group (first probe that fails until every probe answers again).
 */
import type { ProbeRecord } from "./probes";

export const BUCKET_MS = 100;

export interface Outage {
  probe: string;
  from: number;
  to: number;
  /** True when the probe never answered again before it stopped. */
  open: boolean;
}

/** A probe has failed when no answer came for this long (10 intervals, at least 50 ms). */
export function outageThresholdMs(rec: Pick<ProbeRecord, "intervalMs">): number {
  return Math.max(10 * rec.intervalMs, 50);
}

/** Silences longer than the threshold, including one still open when the probe stopped. */
export function outages(rec: ProbeRecord): Outage[] {
  const limit = outageThresholdMs(rec);
  const out: Outage[] = [];
  let last = rec.startedAt;
  for (const t of rec.replies) {
    if (t - last > limit) out.push({ probe: rec.name, from: last, to: t, open: false });
    last = Math.max(last, t);
  }
  if (rec.stoppedAt - last > limit) out.push({ probe: rec.name, from: last, to: rec.stoppedAt, open: true });
  return out;
}

/** Longest time without an answer, from the first answer to the probe's end. */
export function longestGapMs(rec: ProbeRecord): number {
  let gap = 0;
  for (let i = 1; i < rec.replies.length; i++) gap = Math.max(gap, rec.replies[i] - rec.replies[i - 1]);
  if (rec.replies.length) gap = Math.max(gap, rec.stoppedAt - rec.replies[rec.replies.length - 1]);
  else gap = rec.stoppedAt - rec.startedAt;
  return gap;
}

/** Bytes received per 100 ms bucket, from the probe's start. */
export function udpBuckets(rec: ProbeRecord): number[] {
  const n = Math.ceil((rec.stoppedAt - rec.startedAt) / BUCKET_MS);
  const buckets = new Array<number>(Math.max(n, 0)).fill(0);
  rec.replies.forEach((t, i) => {
    const b = Math.floor((t - rec.startedAt) / BUCKET_MS);
    if (b >= 0 && b < buckets.length) buckets[b] += rec.bytes?.[i] ?? 0;
  });
  return buckets;
}

/** Longest run of empty buckets after the stream first delivered, in ms (the thesis' "video interrupted"). */
export function zeroBandwidthMs(buckets: readonly number[]): number {
  let longest = 0;
  let run = 0;
  let started = false;
  for (const b of buckets) {
    if (b > 0) {
      started = true;
      run = 0;
    } else if (started) {
      run++;
      longest = Math.max(longest, run);
    }
  }
  return longest * BUCKET_MS;
}

export interface ProbeFigures {
  name: string;
  kind: ProbeRecord["kind"];
  target: string;
  replies: number;
  longestGapMs: number;
  /** ping only */
  lost?: number;
  /** udp only */
  zeroBandwidthMs?: number;
  outages: Outage[];
  error?: string;
}

export interface GroupFigures {
  probes: ProbeFigures[];
  /**
   * Interruptions of the group: from a probe's first failure until every probe answers again
   * (overlapping silences of different probes merged), in time order.
   */
  interruptions: Array<{ from: number; to: number }>;
  /** The longest interruption (0 when nothing failed). */
  interruptionMs: number;
  /** Total time during which at least one probe was failing (the sum of the interruptions). */
  anyDownMs: number;
  /** Some probe never answered again. */
  unrecovered: boolean;
}

/** Overlapping intervals merged, in time order. */
function merge(intervals: Array<{ from: number; to: number }>): Array<{ from: number; to: number }> {
  const out: Array<{ from: number; to: number }> = [];
  for (const { from, to } of [...intervals].sort((a, b) => a.from - b.from)) {
    const last = out[out.length - 1];
    if (last && from <= last.to) last.to = Math.max(last.to, to);
    else out.push({ from, to });
  }
  return out;
}

/** Figures of every probe and of the group; outages ending before `since` (warm-up) are ignored. */
export function groupFigures(records: readonly ProbeRecord[], since = -Infinity): GroupFigures {
  const probes = records.map((rec): ProbeFigures => {
    const f: ProbeFigures = {
      name: rec.name,
      kind: rec.kind,
      target: rec.target,
      replies: rec.replies.length,
      longestGapMs: Math.round(longestGapMs(rec)),
      outages: outages(rec).filter((o) => o.to >= since),
    };
    if (rec.lost !== undefined) f.lost = rec.lost;
    if (rec.kind === "udp") f.zeroBandwidthMs = zeroBandwidthMs(udpBuckets(rec));
    if (rec.error) f.error = rec.error;
    return f;
  });
  const all = probes.flatMap((p) => p.outages);
  const interruptions = merge(all);
  const lengths = interruptions.map((i) => i.to - i.from);
  return {
    probes,
    interruptions,
    interruptionMs: Math.round(Math.max(0, ...lengths)),
    anyDownMs: Math.round(lengths.reduce((a, b) => a + b, 0)),
    unrecovered: all.some((o) => o.open),
  };
}

/**
 * The longest interruption that overlaps a pause (a VM's source STOP to its RESUME at the
 * destination) and the longest that overlaps none: what the move's stop costs the user, and what
 * the rest of it does (on a 2-core TCG host, guests starved while the streams copy at full speed).
 */
export function interruptionsByPause(
  interruptions: ReadonlyArray<{ from: number; to: number }>,
  pauses: ReadonlyArray<{ from: number; to: number }>,
): { atPauseMs: number; elsewhereMs: number } {
  let atPauseMs = 0;
  let elsewhereMs = 0;
  for (const i of interruptions) {
    const len = Math.round(i.to - i.from);
    if (pauses.some((p) => i.from <= p.to && p.from <= i.to)) atPauseMs = Math.max(atPauseMs, len);
    else elsewhereMs = Math.max(elsewhereMs, len);
  }
  return { atPauseMs, elsewhereMs };
}
