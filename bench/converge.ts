/**
 * npm run bench:converge — one VM (192 MiB) whose guest writer dirties 40 MiB/s, moved over a
 * 100 Mbit/s migration cap (QEMU's max-bandwidth, on loopback) with each convergence policy: none,
 * auto-converge, postcopy. Prints per policy: outcome, total time, downtime (QEMU's), and the guest
 * writer's longest stall (its longest gap between two one-second passes during the move, from its
 * console lines on both hosts: a throttled or page-faulting writer shows it). none is expected to
 * fail by its timeout with the VM still at the source. Environment: BENCH_CONVERGE_TIMEOUT_S
 * (default 40), BENCH_DIRTY_MIBS (default 40).
 */
import fs from "node:fs";
import execa from "execa";
import type { Convergence } from "../nrdl/types";
import { TeleportError } from "../lib/errors";
import { ensureGuest, guestVm } from "../lib/guest/guest";
import { hostsRunning, makeHosts, tearDown } from "../test/harness/hosts";

const TIMEOUT_S = Number(process.env.BENCH_CONVERGE_TIMEOUT_S ?? 40);
const RATE = Number(process.env.BENCH_DIRTY_MIBS ?? 40);
const SECRET = "bench-converge-secret";

/** Longest gap (ms) the writer reported for a pass that ended after `since` bytes of the log. */
function longestGap(serial: string, since: number): number {
  if (!fs.existsSync(serial)) return 0;
  const text = fs.readFileSync(serial, "utf8").slice(since);
  return Math.max(0, ...[...text.matchAll(/lastgap_ms (\d+)/g)].map((m) => Number(m[1])));
}

async function one(convergence: Convergence): Promise<string[]> {
  const guest = await ensureGuest();
  const def = guestVm(guest, "dirty", { memoryMib: 192 });
  def.append = `${def.append} st.dirty=${RATE}`;
  const hosts = makeHosts([def]);
  try {
    await hosts.dc1.start("dirty");
    await new Promise((r) => setTimeout(r, 10_000)); // boot, and the writer at full rate
    const logs = [hosts.dc1.files("dirty").serial, hosts.dc2.files("dirty").serial];
    const marks = logs.map((f) => (fs.existsSync(f) ? fs.statSync(f).size : 0));
    const armed = await hosts.dc2.arm("dirty", {
      address: "127.0.0.1",
      secret: SECRET,
      postcopy: convergence === "postcopy",
    });
    const t0 = Date.now();
    const opts = { bandwidthMbps: 100, downtimeLimitMs: 300, timeoutS: TIMEOUT_S, convergence };
    const outcome = await hosts.dc1
      .migrate("dirty", { uri: armed.uri, secret: SECRET }, opts)
      .done.then((r) => ({ ok: true as const, r }))
      .catch((e: unknown) => ({ ok: false as const, e: TeleportError.from(e) }));
    const wall = Date.now() - t0;
    await new Promise((r) => setTimeout(r, 3000)); // a few more writer passes wherever it runs now
    const stall = Math.max(...logs.map((f, i) => longestGap(f, marks[i])));
    const where = hostsRunning(hosts, "dirty").join("+");
    return outcome.ok
      ? [convergence, "completed", `${outcome.r.totalMs}`, `${outcome.r.downtimeMs}`, `${stall}`, where]
      : [convergence, `failed ${outcome.e.status}`, `${wall}`, "-", `${stall}`, where];
  } finally {
    await tearDown(hosts);
  }
}

async function main(): Promise<void> {
  const load = (await execa("uptime")).stdout.trim();
  const rows = [["convergence", "outcome", "total ms", "downtime ms", "writer stall ms", "runs on"]];
  for (const c of ["none", "auto-converge", "postcopy"] as const) {
    const row = await one(c);
    process.stderr.write(`${row.join("  ")}\n`);
    rows.push(row);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  console.log(`One VM (192 MiB) writing ${RATE} MiB/s, 100 Mbit/s cap, timeout ${TIMEOUT_S} s`);
  console.log([fmt(rows[0]), fmt(widths.map((w) => "-".repeat(w))), ...rows.slice(1).map(fmt)].join("\n"));
  console.log(`load before: ${load}\nload after:  ${(await execa("uptime")).stdout.trim()}`);
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
