/**
 * npm run bench:thesis — the thesis' three experiments on the testbed (test/testbed/), moved by
 * the agents over SIP between two data-center namespaces while a user namespace probes every
 * guest: each experiment x strategy (sequential, parallel, switchover) x inter-DC link
 * (unshaped, tc tbf 1 Gbit/s, 100 Mbit/s), repeated. Guests boot once per experiment and move
 * back and forth. Writes bench/out/thesis/<run>.json per move, thesis.md (the table) and an SVG
 * (+ PNG when rsvg-convert exists) per experiment and strategy, and prints the table.
 *
 * Environment: BENCH_REPEATS (unshaped, default 5), BENCH_REPEATS_1G (default 5), BENCH_REPEATS_100M
 * (default 3: the whole bench must stay under 20 minutes on 2 cores, and at 100 Mbit/s the moves
 * are bound by bytes, ~24 s for exp3's 207 MiB; 5 there add about 5 minutes),
 * BENCH_EXPERIMENTS=exp1,exp2,exp3, BENCH_LINKS=0,1000,100, BENCH_MIGRATORS=sip,direct (default
 * both, on the same booted testbed, each repeat by one then the other; direct: the same plan and QMP
 * migrations from this process with no SIP, the baseline; BENCH_MIGRATOR=direct is BENCH_MIGRATORS=direct),
 * BENCH_STRATEGIES=sequential,parallel,switchover; BENCH_LINKS=none skips these rows.
 * BENCH_REDUCTIONS=none,zstd,dedup (default: none of them): each experiment is also moved as a switchover by
 * the agents with each reduction (migrate --compress / --dedup; dedup's links deflated) over each link of
 * BENCH_REDUCTION_LINKS (default 100,0), BENCH_REPEATS_REDUCE times (default 3) interleaved: bytes on the
 * inter-DC link, wall time and downtime beside the plain stream's of the same run (bench/lib/reductions.ts).
 * BENCH_DISKS=1: exp3's web and storage servers get disks local to each host (a qcow2 image of
 * BENCH_DISK_MIB, default 256, holding BENCH_DISK_DATA_MIB, default 64, of data; mode copy), which
 * every move copies, their guests writing numbered records to them throughout; at the end each
 * disk is checked (clean filesystem, every record the guest wrote in place).
 * Needs root.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import execa from "execa";
import { STRATEGIES, type Strategy } from "../nrdl/types";
import { AgentPair } from "../test/testbed/agents";
import { directMigrator } from "../test/testbed/direct";
import { EXPERIMENT, EXPERIMENTS, type ExperimentName } from "../test/testbed/experiments";
import { ensureGuest } from "../lib/guest/guest";
import { repoRoot } from "../lib/version";
import { Lab } from "../test/testbed/lab";
import { HOSTS, type HostName } from "../test/testbed/network";
import { measureMove, type Migrator, type RunResult } from "../test/testbed/run";
import { timelineSvg } from "../test/testbed/svg";
import { type Group, markdownTable, median, runFigures, switchoverTargets, timelineOf } from "./lib/thesis-report";
import { REDUCTIONS, reductionRun, reductionsTable, type ReductionRun } from "./lib/reductions";

const env = process.env;
const REPEATS = Number(env.BENCH_REPEATS ?? 5);
const REPEATS_1G = Number(env.BENCH_REPEATS_1G ?? 5);
const REPEATS_100M = Number(env.BENCH_REPEATS_100M ?? 3);
const EXPS = (env.BENCH_EXPERIMENTS ?? EXPERIMENTS.join(",")).split(",") as ExperimentName[];
const LINKS = env.BENCH_LINKS === "none" ? [] : (env.BENCH_LINKS ?? "0,1000,100").split(",").map(Number);
const REDUCE = (env.BENCH_REDUCTIONS ?? "").split(",").filter(Boolean);
for (const r of REDUCE)
  if (!(r in REDUCTIONS)) throw new Error(`BENCH_REDUCTIONS: unknown ${r} (${Object.keys(REDUCTIONS)})`);
const REDUCE_LINKS = (env.BENCH_REDUCTION_LINKS ?? "100,0").split(",").map(Number);
const REPEATS_REDUCE = Number(env.BENCH_REPEATS_REDUCE ?? 3);
/** Every reductions run so far (BENCH_REDUCTIONS). */
const reductionRuns: ReductionRun[] = [];
const MIGRATORS = (env.BENCH_MIGRATORS ?? env.BENCH_MIGRATOR ?? "sip,direct").split(",");
const KNOWN_MIGRATORS = ["sip", "sip-noannounce", "direct"];
for (const m of MIGRATORS)
  if (!KNOWN_MIGRATORS.includes(m)) throw new Error(`BENCH_MIGRATORS: unknown migrator ${m} (${KNOWN_MIGRATORS})`);
const STRATS = (env.BENCH_STRATEGIES ?? STRATEGIES.join(",")).split(",") as Strategy[];
const DISKS =
  env.BENCH_DISKS === "1"
    ? { mib: Number(env.BENCH_DISK_MIB ?? 256), dataMib: Number(env.BENCH_DISK_DATA_MIB ?? 64) }
    : undefined;
/** The disk checks of every testbed closed so far (BENCH_DISKS=1). */
const diskChecks: { lines: string[]; problems: string[] } = { lines: [], problems: [] };

const OUT = path.join(repoRoot(), "bench", "out", "thesis");

/** The 1, 5 and 15 minute load averages: the figures mean little without them on a shared 2-core machine. */
const loadAverage = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
const LOAD_START = loadAverage();

function policyFor(strategy: Strategy) {
  // The agents' configuration defaults (lib/config/schema.ts).
  return {
    strategy,
    maxParallel: strategy === "sequential" ? 1 : 4,
    bandwidthMbps: 0,
    downtimeLimitMs: 300,
    timeoutS: 120,
    onError: "abort" as const,
  };
}

async function hasRsvg(): Promise<boolean> {
  return (await execa("rsvg-convert", ["--version"], { reject: false })).exitCode === 0;
}

/** A booted lab, with agents on both hosts when SIP is measured; `close` is also what SIGINT/SIGTERM run. */
interface Bed {
  lab: Lab;
  /** In BENCH_MIGRATORS' order. */
  migrators: Migrator[];
  close(): Promise<void>;
}

let current: Bed | undefined;

async function openBed(name: ExperimentName): Promise<Bed> {
  const lab = await Lab.create(EXPERIMENT[name], await ensureGuest(), DISKS ? { disks: DISKS } : {});
  const agents: AgentPair[] = [];
  const close = async () => {
    current = undefined;
    for (const a of agents) await a.stop();
    const checked = await lab.checkDisks().catch((err: unknown) => ({ lines: [], problems: [String(err)] }));
    diskChecks.lines.push(...checked.lines.map((l) => `${name}: ${l}`));
    diskChecks.problems.push(...checked.problems.map((l) => `${name}: ${l}`));
    await lab.destroy();
  };
  current = { lab, migrators: [], close };
  try {
    await lab.bootAll();
    // sip-noannounce: the same agents without the announce at the stop, to measure what it does for the probes
    for (const m of MIGRATORS.filter((x) => x.startsWith("sip")))
      agents.push(await AgentPair.start(lab, { announce: m !== "sip-noannounce" }));
    current.migrators = MIGRATORS.map((m) => agents.find((a) => a.name === m) ?? directMigrator);
    return current;
  } catch (err) {
    await close();
    throw err;
  }
}

async function runExperiment(
  name: ExperimentName,
  groups: Group[],
  timelines: Map<string, RunResult[]>,
): Promise<void> {
  let bed = await openBed(name);
  try {
    let at: HostName = "dc1";
    for (const linkMbit of LINKS) {
      for (const strategy of STRATS) {
        const byMigrator = MIGRATORS.map((migrator): Group => ({
          experiment: name,
          strategy,
          linkMbit,
          migrator,
          runs: [],
          violations: [],
        }));
        const repeats = linkMbit === 0 ? REPEATS : linkMbit <= 100 ? REPEATS_100M : REPEATS_1G;
        // interleaved, so that both migrators see the same machine load over the repeats
        for (let i = 0; i < repeats; i++)
          for (const [k, group] of byMigrator.entries()) {
            const migrator = bed.migrators[k];
            const to: HostName = at === "dc1" ? "dc2" : "dc1";
            const r = await measureMove(
              bed.lab,
              migrator,
              { from: at, to, policy: policyFor(strategy) },
              { linkMbit, warmupMs: 400, tailMs: 1000 },
            );
            at = to;
            const link = linkMbit || "unshaped";
            const id = `${name}${DISKS ? "-disks" : ""}-${migrator.name}-${strategy}-${link}-${i + 1}`;
            const f = runFigures(r);
            fs.writeFileSync(path.join(OUT, `${id}.json`), JSON.stringify({ ...r, runFigures: f }));
            group.runs.push(f);
            group.violations.push(...r.violations.map((v) => `${id}: ${v}`));
            const key = `${name}-${migrator.name}-${strategy}`;
            if (linkMbit === 0) timelines.set(key, [...(timelines.get(key) ?? []), r]);
            process.stderr.write(
              `${id}: interruption ${f.interruptionMs} ms` +
                (f.atPauseMs !== undefined ? ` (at a pause ${f.atPauseMs}, elsewhere ${f.elsewhereMs})` : "") +
                `, any down ${f.anyDownMs} ms, ping gap ` +
                `${f.longestPingGapMs} ms, lost ${f.pingsLost}, wall ${f.wallMs} ms` +
                (f.diskMib !== undefined ? `, disks ${f.diskMib.toFixed(1)} MiB` : "") +
                (f.stopSpreadMs !== undefined
                  ? `, STOP spread ${f.stopSpreadMs} ms, STOP->last RESUME ${f.stopToLastResumeMs} ms`
                  : "") +
                (r.violations.length ? `  VIOLATIONS: ${r.violations.join("; ")}` : "") +
                "\n",
            );
            if (r.violations.length) {
              // A guest that did not survive the move would spoil every later run: start afresh.
              for (const host of HOSTS)
                for (const log of fs.readdirSync(bed.lab.runDir(host)).filter((f) => f.endsWith(".serial.log")))
                  fs.copyFileSync(path.join(bed.lab.runDir(host), log), path.join(OUT, `${id}-${host}-${log}`));
              const kept = `${path.relative(repoRoot(), OUT)}/${id}-*`;
              process.stderr.write(`${id}: guests' serial logs kept in ${kept}; rebuilding the testbed\n`);
              await bed.close();
              bed = await openBed(name);
              at = "dc1";
            }
          }
        groups.push(...byMigrator);
      }
    }
    await moveReduced(name, bed, at);
  } finally {
    await bed.close();
  }
}

/** BENCH_REDUCTIONS: the group as a switchover by the agents, each reduction in turn over each link. */
async function moveReduced(name: ExperimentName, bed: Bed, from: HostName): Promise<void> {
  if (!REDUCE.length) return;
  const sip = bed.migrators.find((m) => m.name === "sip");
  if (!sip) throw new Error("BENCH_REDUCTIONS needs the sip migrator (BENCH_MIGRATORS)");
  let at = from;
  for (const linkMbit of REDUCE_LINKS)
    for (let i = 0; i < REPEATS_REDUCE; i++)
      for (const reduction of REDUCE) {
        const to: HostName = at === "dc1" ? "dc2" : "dc1";
        const req = { from: at, to, policy: policyFor("switchover"), reductions: REDUCTIONS[reduction] };
        const r = await measureMove(bed.lab, sip, req, { linkMbit, warmupMs: 400, tailMs: 1000 });
        const run = reductionRun(name, linkMbit, reduction, r);
        reductionRuns.push(run);
        if (run.completed) at = to;
        const id = `${name}-reduce-${reduction}-${linkMbit || "unshaped"}-${i + 1}`;
        fs.writeFileSync(path.join(OUT, `${id}.json`), JSON.stringify({ ...r, reductionRun: run }));
        process.stderr.write(
          `${id}: link ${(run.linkBytes / 2 ** 20).toFixed(1)} MiB, QEMU ${(run.qemuBytes / 2 ** 20).toFixed(1)} MiB` +
            (run.frameBytes !== undefined ? `, frames ${(run.frameBytes / 2 ** 20).toFixed(1)} MiB` : "") +
            `, wall ${run.wallMs} ms, downtime ${run.downtimeMs} ms` +
            (r.violations.length ? `  VIOLATIONS: ${r.violations.join("; ")}` : "") +
            "\n",
        );
      }
}

/** The clean run (no violation, when there is one) whose group interruption is the median: the typical one to plot. */
function typical(all: RunResult[]): RunResult {
  const clean = all.filter((r) => r.violations.length === 0);
  const runs = clean.length ? clean : all;
  const m = median(runs.map((r) => r.figures.interruptionMs));
  return runs.reduce((best, r) =>
    Math.abs(r.figures.interruptionMs - m) < Math.abs(best.figures.interruptionMs - m) ? r : best,
  );
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("bench:thesis needs root (network namespaces, taps, tc)");
  fs.mkdirSync(OUT, { recursive: true });
  const t0 = Date.now();
  const groups: Group[] = [];
  const timelines = new Map<string, RunResult[]>();
  for (const name of EXPS) {
    process.stderr.write(`== ${EXPERIMENT[name].title}\n`);
    await runExperiment(name, groups, timelines);
  }
  const rsvg = await hasRsvg();
  const figures: string[] = [];
  for (const [key, runs] of timelines) {
    const svgFile = path.join(OUT, `${key}.svg`);
    fs.writeFileSync(svgFile, timelineSvg(timelineOf(typical(runs))));
    figures.push(svgFile);
    if (rsvg) await execa("rsvg-convert", ["-b", "white", "-o", svgFile.replace(/\.svg$/, ".png"), svgFile]);
  }
  const minutes = ((Date.now() - t0) / 60000).toFixed(1);
  const violations = [...groups.flatMap((g) => g.violations), ...diskChecks.problems];
  const WHO: Record<string, [string, string]> = {
    sip: ["agents over SIP", "SIP"],
    "sip-noannounce": ["agents over SIP without the announce at the stop", "SIP no announce"],
    direct: ["direct QMP, no SIP", "direct"],
  };
  const who = MIGRATORS.map((m) => WHO[m][0]).join(" / ");
  const cells = MIGRATORS.map((m) => WHO[m][1]).join(" / ");
  const targets = switchoverTargets(groups, MIGRATORS);
  const md = [
    `# bench:thesis (${who}), ${new Date(t0).toISOString()}, ${minutes} min, load average ${LOAD_START} at the ` +
      `start, ${loadAverage()} at the end`,
    "",
    ...(MIGRATORS.length > 1 ? [`Each cell: ${cells}, on the same testbed, their repeats interleaved.`, ""] : []),
    ...(DISKS
      ? [
          `With disks (BENCH_DISKS=1): exp3's web and storage copy a ${DISKS.mib} MiB qcow2 image holding ` +
            `${DISKS.dataMib} MiB of data on every move (mode copy). Data check at the end:`,
          ...diskChecks.lines.map((l) => `- ${l}`),
          "",
        ]
      : []),
    "Medians (min-max) over the repeats; times in ms. Ratios: thesis' user-seen loss / our lost " +
      "pings x 5 ms (the thesis' measure),",
    "and / our total any-probe-down time (strictest); for exp2 also the thesis' video " +
      "interruption / our UDP zero-bandwidth interval.",
    "",
    ...(LINKS.length ? [markdownTable(groups, MIGRATORS)] : []),
    ...(reductionRuns.length
      ? [
          "Reductions (issue 26): switchover by the agents over SIP; medians over the repeats; x plain: to the " +
            "plain stream (none) of the same run and link. dedup saved: 1 - frames / QEMU's bytes; deflate saved: " +
            "1 - link / frames (the dedup relays' own counts).",
          "",
          ...reductionsTable(reductionRuns),
          "",
        ]
      : []),
    ...(targets.length
      ? ["Issue 24's targets (switchover, unshaped, medians, ms):", ...targets.map((l) => `- ${l}`), ""]
      : []),
    violations.length
      ? `Invariant violations:\n${violations.map((v) => `- ${v}`).join("\n")}\n`
      : "Invariants held in every run.\n",
    `Figures: ${figures.map((f) => path.relative(repoRoot(), f)).join(", ")}`,
    "",
  ].join("\n");
  fs.writeFileSync(path.join(OUT, "thesis.md"), md);
  process.stdout.write(md);
  if (violations.length) process.exitCode = 1;
}

for (const signal of ["SIGINT", "SIGTERM"] as const)
  process.once(signal, () => {
    process.stderr.write(`bench:thesis: ${signal}, cleaning up\n`);
    void (current?.close() ?? Promise.resolve()).finally(() => process.exit(130));
  });

main().catch((err: unknown) => {
  process.stderr.write(`bench:thesis: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
