/**
 * bench:thesis' reductions (issue 26): the same group moved with each reduction over one link, by
 * the agents over SIP (reductions are negotiated), their repeats interleaved, so that each row's
 * bytes on the inter-DC link, wall time and downtime compare with the plain stream's of the same
 * run. Dedup's share (frames / QEMU's bytes) and the deflate's (link / frames, from the source's
 * index) show apart from the total; zstd's is QEMU's own.
 */
import type { CompressChoice } from "../../lib/plan/compress";
import type { DedupChoice } from "../../lib/plan/dedup";
import type { ExperimentName } from "../../test/testbed/experiments";
import type { RunResult } from "../../test/testbed/run";
import { median } from "./thesis-report";

/** BENCH_REDUCTIONS' words: what the source is told to offer. */
export const REDUCTIONS: Record<string, { compress: CompressChoice; dedup: DedupChoice }> = {
  none: { compress: "none", dedup: "off" },
  zstd: { compress: "zstd", dedup: "off" },
  xbzrle: { compress: "xbzrle", dedup: "off" },
  dedup: { compress: "none", dedup: "on" },
};

export interface ReductionRun {
  experiment: ExperimentName;
  linkMbit: number;
  reduction: string;
  linkBytes: number;
  qemuBytes: number;
  /** The dedup relays' frames (before the link's deflate), when deduplicated. */
  frameBytes?: number;
  /** The relays' bytes on the link (after deflate), when deduplicated. */
  relayLinkBytes?: number;
  wallMs: number;
  downtimeMs: number;
  interruptionMs: number;
  completed: boolean;
}

export function reductionRun(experiment: ExperimentName, linkMbit: number, reduction: string, r: RunResult) {
  const done = r.report.vms.flatMap((v) => (v.outcome === "completed" ? [v] : []));
  const run: ReductionRun = {
    experiment,
    linkMbit,
    reduction,
    linkBytes: r.linkBytes,
    qemuBytes: done.reduce((s, v) => s + v.bytes, 0),
    wallMs: r.wallMs,
    downtimeMs: done.length ? Math.max(...done.map((v) => v.downtimeMs)) : -1,
    interruptionMs: r.figures.interruptionMs,
    completed: done.length === r.report.vms.length,
  };
  if (r.report.dedup) {
    run.frameBytes = r.report.dedup.bytesOut;
    run.relayLinkBytes = r.report.dedup.linkBytes;
  }
  return run;
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);
const pct = (x: number) => `${Math.round(x * 100)} %`;

/** One row per experiment, link and reduction: medians, and the ratios to that run's plain stream. */
export function reductionsTable(runs: ReductionRun[]): string[] {
  const head =
    "| exp | link | reduction | link MiB | x plain | QEMU MiB | dedup saved | deflate saved | wall ms | x plain | " +
    "max downtime ms | x plain | group interruption ms | moves |";
  const lines = [head, `|${" --- |".repeat(14)}`];
  const keys = [...new Set(runs.map((r) => `${r.experiment} ${r.linkMbit}`))];
  for (const key of keys) {
    const cell = runs.filter((r) => `${r.experiment} ${r.linkMbit}` === key);
    const of = (reduction: string) => cell.filter((r) => r.reduction === reduction && r.completed);
    const plain = of("none");
    const base = {
      link: median(plain.map((r) => r.linkBytes)),
      wall: median(plain.map((r) => r.wallMs)),
      down: median(plain.map((r) => r.downtimeMs)),
    };
    for (const reduction of [...new Set(cell.map((r) => r.reduction))]) {
      const ok = of(reduction);
      const all = cell.filter((r) => r.reduction === reduction);
      const link = median(ok.map((r) => r.linkBytes));
      const wall = median(ok.map((r) => r.wallMs));
      const down = median(ok.map((r) => r.downtimeMs));
      const deduped = ok.filter((r) => r.frameBytes !== undefined);
      const dedupSaved = deduped.length ? 1 - median(deduped.map((r) => (r.frameBytes ?? 0) / r.qemuBytes)) : undefined;
      const deflateSaved = deduped.length
        ? 1 - median(deduped.map((r) => (r.relayLinkBytes ?? 0) / (r.frameBytes ?? 1)))
        : undefined;
      const ratio = (x: number, b: number) => (Number.isFinite(x) && b > 0 ? (x / b).toFixed(2) : "-");
      const share = (x: number | undefined) => (x !== undefined ? pct(x) : "-");
      const linkName = all[0].linkMbit ? `${all[0].linkMbit} Mbit/s` : "unshaped";
      lines.push(
        `| ${all[0].experiment} | ${linkName} | ` +
          `${reduction} | ${Number.isFinite(link) ? mib(link) : "-"} | ${ratio(link, base.link)} | ` +
          `${ok.length ? mib(median(ok.map((r) => r.qemuBytes))) : "-"} | ` +
          `${share(dedupSaved)} | ${share(deflateSaved)} | ` +
          `${Number.isFinite(wall) ? wall.toFixed(0) : "-"} | ${ratio(wall, base.wall)} | ` +
          `${Number.isFinite(down) ? down.toFixed(0) : "-"} | ${ratio(down, base.down)} | ` +
          `${ok.length ? median(ok.map((r) => r.interruptionMs)).toFixed(0) : "-"} | ${ok.length} of ${all.length} |`,
      );
    }
  }
  return lines;
}
