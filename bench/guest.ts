/**
 * `npm run bench:guest`: how often a live migration breaks a TCG guest (its serial log shows
 * "not a head", "kernel BUG", an Oops, a panic or a reboot), with and without the driver's
 * workaround for QEMU < 9.0's lost dirty pages (lib/hypervisor/qemu.ts, tcgSafeMemory), side by
 * side in one run: two exp2 testbeds, one per variant, probed by the user like the thesis
 * benchmark, their moves interleaved so both see the same machine load.
 *   padded  QemuDriver as shipped (RAM + 8 KiB under TCG: QEMU's per-page dirty sync)
 *   exact   the same driver with tcgDirtyWorkaround: false (RAM a multiple of 256 KiB)
 * Settings: MOVES per variant (default 8), MBIT inter-DC tbf rate (default 100: a long
 * pre-copy, where the fault shows most; 0 = unshaped). A broken guest is rebooted so it is not
 * counted again; its destination serial log is kept in bench/out/guest/.
 */
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { ensureGuest } from "../lib/guest/guest";
import { repoRoot } from "../lib/version";
import { Lab } from "../test/testbed/lab";
import { EXPERIMENT, hostAddress } from "../test/testbed/experiments";
import { startPing, startTcpEcho, startUdpStream, type Probe } from "../test/testbed/probes";
import { SEGMENT, type HostName } from "../test/testbed/network";

const MOVES = Number(process.env.MOVES ?? 8);
const MBIT = Number(process.env.MBIT ?? 100);
const OUT = path.join(repoRoot(), "bench", "out", "guest");
const MARK = /not a head|kernel BUG|Kernel panic|GUEST-READY|BUG:|Oops|general protection/;

interface Bed {
  name: "padded" | "exact";
  lab: Lab;
  probes: Probe[];
  at: HostName;
  moves: number;
  broken: string[];
}

async function openBed(name: Bed["name"]): Promise<Bed> {
  const lab = await Lab.create(EXPERIMENT.exp2, await ensureGuest(), { tcgDirtyWorkaround: name === "padded" });
  const bed: Bed = { name, lab, probes: [], at: "dc1", moves: 0, broken: [] };
  await lab.bootAll();
  if (MBIT > 0) await lab.net.shapeInterDc(MBIT);
  const user = lab.net.exec("user");
  for (const g of lab.exp.guests) bed.probes.push(startPing(user, g.name, hostAddress(g)));
  bed.probes.push(await startTcpEcho(user, lab.dir, "tcp", "10.20.0.10"));
  bed.probes.push(
    await startUdpStream(user, lab.dir, "udp", "10.20.0.10", { sourcePort: 45000 + Math.floor(Math.random() * 1000) }),
  );
  return bed;
}

async function move(lab: Lab, vm: string, from: HostName, to: HostName): Promise<void> {
  const secret = randomBytes(32).toString("hex");
  const armed = await lab
    .driver(to)
    .arm(vm, { address: SEGMENT[to], port: 40000 + Math.floor(Math.random() * 20000), secret });
  await lab
    .driver(from)
    .migrate(vm, { uri: armed.uri, secret }, { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 120 }).done;
  await lab.driver(to).waitResumed(vm, 20000);
}

/** Move both guests of a bed to the other host and count the guests whose kernel broke. */
async function moveAndCheck(bed: Bed, n: number): Promise<void> {
  const { lab } = bed;
  const to: HostName = bed.at === "dc1" ? "dc2" : "dc1";
  const serial = (vm: string) => lab.driver(to).files(vm).serial;
  const offsets = new Map(
    lab.exp.guests.map((g) => [g.name, fs.existsSync(serial(g.name)) ? fs.statSync(serial(g.name)).size : 0]),
  );
  const t0 = Date.now();
  await Promise.all(lab.exp.guests.map((g) => move(lab, g.name, bed.at, to)));
  const ms = Date.now() - t0;
  bed.at = to;
  await new Promise((r) => setTimeout(r, 3000));
  for (const g of lab.exp.guests) {
    bed.moves++;
    const hits = fs
      .readFileSync(serial(g.name))
      .subarray(offsets.get(g.name) ?? 0)
      .toString()
      .split("\n")
      .filter((l) => MARK.test(l));
    console.log(`${bed.name} move ${n} ${g.name} -> ${to} ${ms} ms ${hits.length ? `BROKEN ${hits[0].trim()}` : "ok"}`);
    if (!hits.length) continue;
    bed.broken.push(`${n} ${g.name}: ${hits[0].trim()}`);
    fs.copyFileSync(serial(g.name), path.join(OUT, `${bed.name}-${n}-${g.name}.serial.log`));
    // A broken guest must not be counted again: boot it afresh.
    await lab.driver(to).stop(g.name);
    await lab.driver(to).start(g.name);
    for (let k = 0; k < 120 && (await lab.uptime(g)) === undefined; k++) await new Promise((r) => setTimeout(r, 500));
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("bench:guest needs root (network namespaces, taps, tc)");
  fs.mkdirSync(OUT, { recursive: true });
  const beds: Bed[] = [];
  try {
    for (const name of ["padded", "exact"] as const) beds.push(await openBed(name));
    for (let n = 1; n <= MOVES; n++) for (const bed of beds) await moveAndCheck(bed, n);
  } finally {
    console.log(
      `\nguests broken by a move (2 guests per move, ${MBIT ? `${MBIT} Mbit/s inter-DC link` : "unshaped link"}, TCG):`,
    );
    for (const b of beds)
      console.log(`${b.name.padEnd(7)} ${b.broken.length}/${b.moves} broken  ${b.broken.join(" ;; ")}`);
    for (const b of beds) {
      for (const p of b.probes) await p.stop().catch(() => undefined);
      await b.lab.destroy();
    }
  }
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
