/**
 * Real QEMU 7.2 migration streams for the dedup tests: test guests booted side by side migrate to
 * `exec:cat > FILE` (what a relay would receive from QEMU), one file per VM.
 */
import fs from "node:fs";
import path from "node:path";
import { TeleportError } from "../../lib/errors";
import { QmpClient } from "../../lib/hypervisor/qmp";
import { ensureGuest, guestVm } from "../../lib/guest/guest";
import { makeHosts, tearDown } from "../harness/hosts";

async function migrateToFile(mon: string, file: string): Promise<void> {
  const qmp = await QmpClient.connect(mon);
  try {
    await qmp.execute("migrate", { uri: `exec:cat > ${file}` });
    for (let i = 0; i < 300; i++) {
      const info = await qmp.execute<{ status?: string }>("query-migrate");
      if (info.status === "completed") return;
      if (info.status === "failed") throw new TeleportError(500, "capture migration failed");
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new TeleportError(504, "capture migration did not complete");
  } finally {
    await qmp.close();
  }
}

/** Boots `names`, lets them settle `settleMs`, and returns each one's whole migration stream. */
export async function captureStreams(names: string[], settleMs: number): Promise<Map<string, Buffer>> {
  const guest = await ensureGuest();
  const hosts = makeHosts(names.map((n) => guestVm(guest, n)));
  try {
    for (const n of names) await hosts.dc1.start(n);
    await new Promise((r) => setTimeout(r, settleMs));
    const out = new Map<string, Buffer>();
    for (const n of names) {
      const file = path.join(hosts.base, `${n}.stream`);
      await migrateToFile(hosts.dc1.files(n).mon, file);
      out.set(n, fs.readFileSync(file));
    }
    return out;
  } finally {
    await tearDown(hosts);
  }
}
