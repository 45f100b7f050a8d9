/**
 * npm run bench:dedup — three test guests booted alike (a stand-in for exp3's group: the same
 * kernel and initramfs, st.fill=4,1 as in test/dedup) move between two run dirs on loopback, all at
 * once: first with the plain TLS-PSK stream, then back with group page dedup (SPEC.md 5.8), then
 * again with dedup over deflated links (dedup-link="deflate"). Prints
 * bytes on the link (plain: QEMU's transferred bytes; dedup: the relays' bytes on the link), the ratio, the
 * destination index's memory, the source relay's CPU per GiB of QEMU stream, wall time and the
 * longest QEMU downtime, with the load average.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { SentPages } from "../lib/dedup/encoder";
import { DedupRebuilder } from "../lib/dedup/rebuild";
import type { MigrationOptions, MigrationResult } from "../lib/hypervisor/driver";
import { terminateRunDirs } from "../lib/hypervisor/pidfile";
import { QemuDriver } from "../lib/hypervisor/qemu";
import { ensureGuest, guestVm } from "../lib/guest/guest";

const NAMES = ["vm1", "vm2", "vm3"];
const CAP = 65_536;
const SECRET = "bench-dedup";
const OPTS: MigrationOptions = { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 120, awaitCommit: true };
const MIB = 2 ** 20;

interface Row {
  mode: string;
  linkBytes: number;
  wallMs: number;
  downtimeMs: number;
}

async function move(
  from: QemuDriver,
  to: QemuDriver,
  dedup: boolean,
  deflate = false,
): Promise<Row & { stats?: string }> {
  const index = new DedupRebuilder(CAP, undefined, deflate);
  const pages = new SentPages(CAP, deflate);
  const armed = await Promise.all(
    NAMES.map((n) => to.arm(n, { address: "127.0.0.1", secret: SECRET, ...(dedup ? { dedup: index } : {}) })),
  );
  const t0 = Date.now();
  const results: MigrationResult[] = await Promise.all(
    NAMES.map(
      (n, i) =>
        from.migrate(n, { uri: armed[i].uri, secret: SECRET }, { ...OPTS, ...(dedup ? { dedup: pages } : {}) }).done,
    ),
  );
  for (const n of NAMES) await to.waitResumed(n, 20_000);
  const wallMs = Date.now() - t0;
  for (const n of NAMES) await from.stop(n); // the group's commit: the paused source copies go
  const downtimeMs = Math.max(...results.map((r) => r.downtimeMs));
  if (!dedup)
    return { mode: "plain", linkBytes: results.reduce((s, r) => s + r.transferredBytes, 0), wallMs, downtimeMs };
  const s = pages.stats;
  const stats =
    `hits ${s.hits} of ${s.pages} pages; ` +
    `index ${index.stats.stored} pages = ${((index.stats.stored * 4096) / MIB).toFixed(0)} MiB; ` +
    `relay CPU ${((s.cpuMs * 2 ** 30) / s.bytesIn).toFixed(0)} ms/GiB; ` +
    `QEMU stream ${(s.bytesIn / MIB).toFixed(1)} MiB, frames ${(s.bytesOut / MIB).toFixed(1)} MiB`;
  return { mode: deflate ? "dedup+deflate" : "dedup", linkBytes: s.linkBytes, wallMs, downtimeMs, stats };
}

async function main(): Promise<void> {
  const guest = await ensureGuest();
  const defs = NAMES.map((n) => {
    const d = guestVm(guest, n);
    return { ...d, append: `${d.append} st.fill=4,1` };
  });
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-bd-"));
  const dirs = [path.join(base, "dc1"), path.join(base, "dc2")];
  const [dc1, dc2] = dirs.map((runDir) => new QemuDriver({ runDir, inventory: defs, startTimeoutMs: 20_000 }));
  try {
    await Promise.all(NAMES.map((n) => dc1.start(n)));
    await new Promise((r) => setTimeout(r, 15_000)); // booted and filled
    const plain = await move(dc1, dc2, false);
    const dedup = await move(dc2, dc1, true);
    const deflated = await move(dc1, dc2, true, true);
    console.log(
      `load average ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")}`,
    );
    console.log("mode           link MiB  ratio  wall ms  max downtime ms");
    for (const r of [plain, dedup, deflated])
      console.log(
        `${r.mode.padEnd(14)} ${(r.linkBytes / MIB).toFixed(1).padStart(8)}` +
          `  ${(r.linkBytes / plain.linkBytes).toFixed(2)}x` +
          `  ${String(r.wallMs).padStart(7)}  ${String(r.downtimeMs).padStart(15)}`,
      );
    console.log(`dedup: ${dedup.stats}`);
    console.log(`dedup+deflate: ${deflated.stats}`);
  } finally {
    await terminateRunDirs(dirs);
    fs.rmSync(base, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
