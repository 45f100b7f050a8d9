/**
 * Two "hosts" on one machine without agents, for driver tests: two drivers with identical
 * definitions and their own run directories (dc1, dc2), plus the checks every test ends with: each
 * VM runs in exactly one run dir, and every guest a test started is gone afterwards (killed by pidfile).
 * The driver is a parameter; a new one (libvirt) is one entry in DRIVER_HOSTS.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { TeleportError } from "../../lib/errors";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { livePid, terminateRunDirs } from "../../lib/hypervisor/pidfile";
import { QemuDriver } from "../../lib/hypervisor/qemu";

/** How to open each driver on a run dir; the driver tests use driver-specific calls, hence the types. */
const DRIVER_HOSTS = {
  qemu: (runDir: string, inventory: VmDefinition[]) => new QemuDriver({ runDir, inventory, startTimeoutMs: 10_000 }),
};

export interface Hosts<D = QemuDriver> {
  base: string;
  dirs: { dc1: string; dc2: string };
  dc1: D;
  dc2: D;
  defs: VmDefinition[];
  /** A fresh driver on the same run dir (what an agent restart does). */
  reopen(host: "dc1" | "dc2"): D;
}

export function makeHosts<K extends keyof typeof DRIVER_HOSTS = "qemu">(
  defs: VmDefinition[],
  driver: K = "qemu" as K,
): Hosts<ReturnType<(typeof DRIVER_HOSTS)[K]>> {
  // Short base path: QMP socket paths must stay under 108 bytes.
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-hv-"));
  const dirs = { dc1: path.join(base, "dc1"), dc2: path.join(base, "dc2") };
  const make = (dir: string) => DRIVER_HOSTS[driver](dir, defs) as ReturnType<(typeof DRIVER_HOSTS)[K]>;
  return { base, dirs, dc1: make(dirs.dc1), dc2: make(dirs.dc2), defs, reopen: (h) => make(dirs[h]) };
}

/** Run dirs (by host name) where this VM has a live QEMU. */
export function hostsRunning(hosts: Hosts<unknown>, vm: string): string[] {
  return (["dc1", "dc2"] as const).filter((h) => livePid(path.join(hosts.dirs[h], `${vm}.pid`)) !== undefined);
}

/** Kill every QEMU left in the run dirs and remove the scratch folder. */
export async function tearDown(hosts: Hosts<unknown>): Promise<void> {
  await terminateRunDirs(Object.values(hosts.dirs));
  fs.rmSync(hosts.base, { recursive: true, force: true });
}

/** The TeleportError a promise rejects with; throws when it resolves. */
export async function rejection(p: Promise<unknown>): Promise<TeleportError> {
  try {
    await p;
  } catch (err) {
    return TeleportError.from(err);
  }
  throw new Error("expected a rejection");
}
