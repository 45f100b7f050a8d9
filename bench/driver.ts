/**
 * npm run bench:driver — N = 1, 2, 4, 8 idle 128 MiB guests moved between two run dirs ("hosts")
 * on loopback: a first move after boot (one after the other), then rounds of one-after-the-other
 * and all-at-once moves, back and forth. Listeners are armed beforehand; the wall time runs from the first `migrate`
 * to the last VM running at
 * its destination. Downtime per VM is QEMU's own figure (query-migrate). One table with plain TCP
 * migration streams, one with TLS-PSK (BENCH_MODES=tcp,tls). Writes bench/out/driver.json too.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { MigrationOptions, MigrationResult } from "../lib/hypervisor/driver";
import { terminateRunDirs } from "../lib/hypervisor/pidfile";
import { QemuDriver } from "../lib/hypervisor/qemu";
import { chooseAccel, type AccelChoice } from "../lib/hypervisor/accel";
import { ensureGuest, guestVm, type GuestFiles } from "../lib/guest/guest";
import { repoRoot } from "../lib/version";

const SIZES = (process.env.BENCH_SIZES ?? "1,2,4,8").split(",").map(Number);
const MEMORY_MIB = 128;
const OPTS: MigrationOptions = { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 120 };
const SECRET = "bench";
/** Rounds per mode; the table gives the median wall time (the machine is shared and noisy). */
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);

interface Round {
  wallMs: number;
  downtimesMs: number[];
  totalsMs: number[];
  mib: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Idle means booted: wait for the guest's ready line on its serial console. */
async function waitBooted(driver: QemuDriver, vm: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (!fs.readFileSync(driver.files(vm).serial, "utf8").includes(`GUEST-READY ${vm}`)) {
    if (Date.now() > deadline) throw new Error(`${vm} did not boot within 120 s`);
    await sleep(200);
  }
}

async function moveAll(from: QemuDriver, to: QemuDriver, vms: string[], parallel: boolean): Promise<Round> {
  const armed = await Promise.all(vms.map((vm) => to.arm(vm, { address: "127.0.0.1", secret: SECRET })));
  const one = async (i: number): Promise<MigrationResult> => {
    const r = await from.migrate(vms[i], { uri: armed[i].uri, secret: SECRET }, OPTS).done;
    await to.waitResumed(vms[i], 30_000);
    return r;
  };
  const t0 = performance.now();
  const results: MigrationResult[] = [];
  if (parallel) results.push(...(await Promise.all(vms.map((_, i) => one(i)))));
  else for (let i = 0; i < vms.length; i++) results.push(await one(i));
  const wallMs = performance.now() - t0;
  return {
    wallMs,
    downtimesMs: results.map((r) => r.downtimeMs),
    totalsMs: results.map((r) => r.totalMs),
    mib: results.reduce((s, r) => s + r.transferredBytes, 0) / 2 ** 20,
  };
}

/** Rounds of one mode as one: median wall time, every VM's downtime. */
function pool(rounds: Round[]): Round {
  return {
    wallMs: median(rounds.map((r) => r.wallMs)),
    downtimesMs: rounds.flatMap((r) => r.downtimesMs),
    totalsMs: rounds.flatMap((r) => r.totalsMs),
    mib: median(rounds.map((r) => r.mib)),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function killAll(dirs: string[]): Promise<void> {
  await terminateRunDirs(dirs);
}

interface Row {
  n: number;
  first: Round;
  seq: Round;
  par: Round;
}

/** One table: every N, with or without TLS-PSK on the migration streams. */
async function measure(guest: GuestFiles, accel: AccelChoice, migrationTls: boolean, dirs: string[]): Promise<Row[]> {
  const rows: Row[] = [];
  for (const n of SIZES) {
    const names = Array.from({ length: n }, (_, i) => `b${n}-${i + 1}`);
    const defs = names.map((name) => guestVm(guest, name, { memoryMib: MEMORY_MIB }));
    const dc1 = new QemuDriver({ runDir: dirs[0], inventory: defs, accel, migrationTls });
    const dc2 = new QemuDriver({ runDir: dirs[1], inventory: defs, accel, migrationTls });
    for (const vm of names) await dc1.start(vm);
    await Promise.all(names.map((vm) => waitBooted(dc1, vm)));
    await sleep(1000); // let the guests settle into idle
    // A VM's first migration after boot costs QEMU extra (hundreds of ms under TCG): it is
    // measured apart, so that sequential and parallel compare like with like.
    const first = await moveAll(dc1, dc2, names, false);
    // Then REPEAT sequential and parallel rounds, interleaved, each moving every VM across.
    let [from, to] = [dc2, dc1];
    const seq: Round[] = [];
    const par: Round[] = [];
    for (let r = 0; r < REPEAT; r++)
      for (const parallel of [false, true]) {
        (parallel ? par : seq).push(await moveAll(from, to, names, parallel));
        [from, to] = [to, from];
      }
    const row = { n, first, seq: pool(seq), par: pool(par) };
    rows.push(row);
    process.stderr.write(
      `  ${migrationTls ? "TLS" : "TCP"} N=${n}: first ${first.wallMs.toFixed(0)} ms, sequential ` +
        `${row.seq.wallMs.toFixed(0)} ms, parallel ${row.par.wallMs.toFixed(0)} ms\n`,
    );
    for (const vm of names) await from.stop(vm);
  }
  return rows;
}

function table(title: string, rows: Row[]): string[] {
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(" ");
  const medMax = (xs: number[]) => `${median(xs).toFixed(0)} / ${Math.max(...xs).toFixed(0)}`;
  return [
    title,
    "",
    "| N | first move after boot (seq) wall ms | sequential wall ms | parallel wall ms | " +
      "parallel/sequential | MiB per round | downtime ms sequential med / max | downtime ms " +
      "parallel med / max | first move downtimes ms (each VM) |",
    "|---|---|---|---|---|---|---|---|---|",
    ...rows.map(
      ({ n, first, seq, par }) =>
        `| ${n} | ${first.wallMs.toFixed(0)} | ${seq.wallMs.toFixed(0)} | ${par.wallMs.toFixed(0)} ` +
        `| ${(par.wallMs / seq.wallMs).toFixed(2)} | ${seq.mib.toFixed(0)} | ` +
        `${medMax(seq.downtimesMs)} | ${medMax(par.downtimesMs)} | ${fmt(first.downtimesMs)} |`,
    ),
    "",
  ];
}

async function main(): Promise<void> {
  const guest = await ensureGuest();
  const accel = chooseAccel();
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-bench-"));
  const dirs = [path.join(base, "dc1"), path.join(base, "dc2")];
  const modes = (process.env.BENCH_MODES ?? "tcp,tls").split(",");
  const results: Record<string, Row[]> = {};
  process.stderr.write(`bench:driver: ${accel.reason}; ${os.cpus().length} CPUs; ${MEMORY_MIB} MiB idle guests\n`);
  try {
    for (const mode of modes) results[mode] = await measure(guest, accel, mode === "tls", dirs);
  } finally {
    await killAll(dirs);
    fs.rmSync(base, { recursive: true, force: true });
  }
  const lines = [
    `QEMU live migration on loopback, ${accel.accel.toUpperCase()}, ${MEMORY_MIB} MiB idle ` +
      `guests, ${os.cpus().length} CPUs, downtime-limit ${OPTS.downtimeLimitMs} ms, no bandwidth cap.`,
    `Wall time: first migrate to last VM running at its destination, median of ${REPEAT} rounds ` +
      `per mode. Downtime: QEMU's figure for every VM in every round.`,
    "",
    ...modes.flatMap((m) =>
      table(
        m === "tls"
          ? "Migration stream TLS-PSK (the driver's default):"
          : "Migration stream plain TCP (migrationTls: false):",
        results[m],
      ),
    ),
  ];
  process.stdout.write(lines.join("\n"));
  const out = path.join(repoRoot(), "bench", "out");
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(
    path.join(out, "driver.json"),
    JSON.stringify({ accel, memoryMib: MEMORY_MIB, options: OPTS, results }, null, 2),
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:driver: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
