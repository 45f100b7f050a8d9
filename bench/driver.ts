/**
 * npm run bench:driver — N = 1, 2, 4, 8 idle 128 MiB guests moved between two run dirs ("hosts")
 * on loopback: a first move after boot (one after the other), then rounds of one-after-the-other
 * and all-at-once moves, back and forth. Listeners are armed beforehand; the wall time runs from
 * the first `migrate` to the last VM running at its destination. Downtime per VM is the
 * hypervisor's own figure (QEMU's query-migrate, libvirt's domjobinfo or Finish3 cookie). One table with plain TCP
 * migration streams, one with TLS-PSK, one with the same guests as libvirt domains between two
 * libvirtd (lib/guest/libvirt-lab.ts) through the libvirt driver, one with plain native
 * `virsh migrate --live --p2p` between the same two libvirtd (the baseline a libvirt user would pick,
 * bench/lib/plain-virsh.ts), and the libvirt driver beside QEMU TLS-PSK and plain virsh
 * (BENCH_MODES=tcp,tls,libvirt,virsh; `tunnelled`: the libvirt driver with stream: "tunnelled"). Writes
 * bench/out/driver.json too.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import type { MigrationOptions, MigrationResult, VmDefinition } from "../lib/hypervisor/driver";
import { LibvirtDriver } from "../lib/hypervisor/libvirt";
import { terminateRunDirs } from "../lib/hypervisor/pidfile";
import { QemuDriver } from "../lib/hypervisor/qemu";
import { chooseAccel, type AccelChoice } from "../lib/hypervisor/accel";
import { ensureGuest, guestVm, type GuestFiles } from "../lib/guest/guest";
import { defineDomain, domainXml, startLibvirtLab, type LibvirtLab } from "../lib/guest/libvirt-lab";
import { repoRoot } from "../lib/version";
import { plainVirshPair, type BenchHost } from "./lib/plain-virsh";

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
async function waitBooted(serial: string, vm: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  const read = () => (fs.existsSync(serial) ? fs.readFileSync(serial, "utf8") : "");
  while (!read().includes(`GUEST-READY ${vm}`)) {
    if (Date.now() > deadline) throw new Error(`${vm} did not boot within 120 s`);
    await sleep(200);
  }
}

async function moveAll(from: BenchHost, to: BenchHost, vms: string[], parallel: boolean): Promise<Round> {
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

/** Two hosts' drivers for N guests, and where each guest's console goes on dc1. */
interface Hosts {
  dc1: BenchHost;
  dc2: BenchHost;
  serial(vm: string): string;
}
type Setup = (names: string[]) => Promise<Hosts>;

/** QEMU processes in two run dirs, with or without TLS-PSK on the migration streams. */
function qemuHosts(guest: GuestFiles, accel: AccelChoice, migrationTls: boolean, dirs: string[]): Setup {
  return async (names) => {
    const defs = names.map((name) => guestVm(guest, name, { memoryMib: MEMORY_MIB }));
    const dc1 = new QemuDriver({ runDir: dirs[0], inventory: defs, accel, migrationTls });
    const dc2 = new QemuDriver({ runDir: dirs[1], inventory: defs, accel, migrationTls });
    return { dc1, dc2, serial: (vm) => dc1.files(vm).serial };
  };
}

/** The guests as libvirt domains defined alike in the lab's two libvirtd; where each one's console goes. */
async function defineLabGuests(lab: LibvirtLab, names: string[]): Promise<(vm: string) => string> {
  const serial = (vm: string) => path.join(lab.dc1.dir, `${vm}.serial.log`);
  for (const vm of names) {
    const xml = domainXml(lab.guest, vm, crypto.randomUUID(), MEMORY_MIB, 1, serial(vm));
    await defineDomain(lab.dc1, xml);
    await defineDomain(lab.dc2, xml);
  }
  return serial;
}

/** The same guests as libvirt domains, native `virsh migrate --live --p2p` with no sip-teleport at all. */
function plainVirshHosts(lab: LibvirtLab): Setup {
  return async (names) => ({ ...plainVirshPair(lab.dc1, lab.dc2), serial: await defineLabGuests(lab, names) });
}

/** The same guests as libvirt domains defined alike in the lab's two libvirtd, through the libvirt driver. */
function libvirtHosts(lab: LibvirtLab, dirs: string[], stream: "native" | "tunnelled" = "native"): Setup {
  return async (names) => {
    const serial = await defineLabGuests(lab, names);
    const defs = (uri: string) =>
      names.map((name): VmDefinition => ({
        name,
        hypervisor: "libvirt",
        role: "server",
        memoryMib: MEMORY_MIB,
        cpus: 1,
        disks: [],
        nics: [],
        libvirt: { uri, domain: name, defineFromSource: false },
      }));
    return {
      dc1: new LibvirtDriver({ runDir: dirs[0], inventory: defs(lab.dc1.uri), stream }),
      dc2: new LibvirtDriver({ runDir: dirs[1], inventory: defs(lab.dc2.uri), stream }),
      serial,
    };
  };
}

/** One table: every N on the given hosts. */
async function measure(label: string, setup: Setup, prefix = "b"): Promise<Row[]> {
  const rows: Row[] = [];
  for (const n of SIZES) {
    // one libvirt lab serves two modes: each defines its own domains (a name is one UUID)
    const names = Array.from({ length: n }, (_, i) => `${prefix}${n}-${i + 1}`);
    const { dc1, dc2, serial } = await setup(names);
    for (const vm of names) await dc1.start(vm);
    await Promise.all(names.map((vm) => waitBooted(serial(vm), vm)));
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
      `  ${label} N=${n}: first ${first.wallMs.toFixed(0)} ms, sequential ` +
        `${row.seq.wallMs.toFixed(0)} ms, parallel ${row.par.wallMs.toFixed(0)} ms\n`,
    );
    for (const vm of names) await from.stop(vm);
  }
  return rows;
}

/**
 * The libvirt driver beside the QEMU driver (TLS-PSK, the drivers' defaults) and, when measured, plain
 * native `virsh migrate`, N by N: wall times, the ratios the issue's "done when" is about, downtimes.
 */
function sideBySide(qemu: Row[], libvirt: Row[], virsh: Row[] | undefined): string[] {
  const med = (xs: number[]) => median(xs).toFixed(0);
  const downs = (r: Row | undefined) => (r ? med([...r.seq.downtimesMs, ...r.par.downtimesMs]) : "-");
  const ratio = (a: number | undefined, b: number) => (a ? (b / a).toFixed(2) : "-");
  const wall = (r: Row | undefined, k: "seq" | "par") => (r ? r[k].wallMs.toFixed(0) : "-");
  return [
    "libvirt driver beside the QEMU driver (TLS-PSK) and plain native virsh migrate --live --p2p, same guests, " +
      "same moves:",
    "",
    "| N | sequential wall ms QEMU / virsh / libvirt | libvirt/virsh | libvirt/QEMU | " +
      "parallel wall ms QEMU / virsh / libvirt | libvirt/virsh | libvirt/QEMU | " +
      "downtime ms median QEMU / virsh / libvirt | MiB per round QEMU / virsh / libvirt |",
    "|---|---|---|---|---|---|---|---|---|",
    ...qemu.flatMap((q) => {
      const l = libvirt.find((r) => r.n === q.n);
      if (!l) return [];
      const v = virsh?.find((r) => r.n === q.n);
      const cols = (k: "seq" | "par") =>
        `${wall(q, k)} / ${wall(v, k)} / ${wall(l, k)} | ${ratio(v?.[k].wallMs, l[k].wallMs)} ` +
        `| ${ratio(q[k].wallMs, l[k].wallMs)}`;
      const mib = [q, v, l].map((r) => (r ? r.seq.mib.toFixed(0) : "-")).join(" / ");
      return [`| ${q.n} | ${cols("seq")} | ${cols("par")} | ${downs(q)} / ${downs(v)} / ${downs(l)} | ${mib} |`];
    }),
    "",
  ];
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

const TITLES: Record<string, string> = {
  tcp: "QEMU driver, migration stream plain TCP (migrationTls: false):",
  tls: "QEMU driver, migration stream TLS-PSK (the driver's default):",
  libvirt:
    "libvirt driver (its default, stream native: control through the gate, the stream on a TLS-PSK connection apart):",
  tunnelled: "libvirt driver, stream: tunnelled (virsh migrate --live --p2p --tunnelled through the armed tunnel):",
  virsh: "plain virsh migrate --live --p2p (native, no sip-teleport; --migrateuri unix:// between the lab's hosts):",
};

async function main(): Promise<void> {
  const guest = await ensureGuest();
  const accel = chooseAccel();
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-bench-"));
  const dirs = [path.join(base, "dc1"), path.join(base, "dc2")];
  const modes = (process.env.BENCH_MODES ?? "tcp,tls,libvirt,virsh").split(",");
  const results: Record<string, Row[]> = {};
  process.stderr.write(`bench:driver: ${accel.reason}; ${os.cpus().length} CPUs; ${MEMORY_MIB} MiB idle guests\n`);
  let lab: LibvirtLab | undefined;
  try {
    for (const mode of modes) {
      if (mode === "libvirt") {
        lab ??= await startLibvirtLab();
        results[mode] = await measure("libvirt", libvirtHosts(lab, dirs));
      } else if (mode === "tunnelled") {
        lab ??= await startLibvirtLab();
        results[mode] = await measure("libvirt tunnelled", libvirtHosts(lab, dirs, "tunnelled"), "t");
      } else if (mode === "virsh") {
        lab ??= await startLibvirtLab();
        results[mode] = await measure("plain virsh", plainVirshHosts(lab), "v");
      } else results[mode] = await measure(mode.toUpperCase(), qemuHosts(guest, accel, mode === "tls", dirs));
    }
  } finally {
    await killAll(dirs);
    await lab?.close();
    fs.rmSync(base, { recursive: true, force: true });
  }
  const lines = [
    `Live migration on loopback, ${accel.accel.toUpperCase()}, ${MEMORY_MIB} MiB idle ` +
      `guests, ${os.cpus().length} CPUs, downtime-limit ${OPTS.downtimeLimitMs} ms, no bandwidth cap.`,
    `Wall time: first migrate to last VM running at its destination, median of ${REPEAT} rounds ` +
      `per mode. Downtime: the hypervisor's figure for every VM in every round.`,
    "",
    ...modes.flatMap((m) => table(TITLES[m] ?? m, results[m])),
    ...(results.tls && results.libvirt ? sideBySide(results.tls, results.libvirt, results.virsh) : []),
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
