/**
 * Two "hosts" on one machine: two QEMU drivers with identical definitions and their own run
 * directories (dc1, dc2), plus the checks every test ends with: each VM runs in exactly one run
 * dir, and every QEMU a test started is gone afterwards (killed by pidfile).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { livePid, terminateRunDirs } from "../../lib/hypervisor/pidfile";
import { QemuDriver } from "../../lib/hypervisor/qemu";

export interface Hosts {
  base: string;
  dirs: { dc1: string; dc2: string };
  dc1: QemuDriver;
  dc2: QemuDriver;
  defs: VmDefinition[];
  /** A fresh driver on the same run dir (what an agent restart does). */
  reopen(host: "dc1" | "dc2"): QemuDriver;
}

export function makeHosts(defs: VmDefinition[]): Hosts {
  // Short base path: QMP socket paths must stay under 108 bytes.
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-hv-"));
  const dirs = { dc1: path.join(base, "dc1"), dc2: path.join(base, "dc2") };
  const make = (dir: string) => new QemuDriver({ runDir: dir, inventory: defs, startTimeoutMs: 10_000 });
  return { base, dirs, dc1: make(dirs.dc1), dc2: make(dirs.dc2), defs, reopen: (h) => make(dirs[h]) };
}

/** Run dirs (by host name) where this VM has a live QEMU. */
export function hostsRunning(hosts: Hosts, vm: string): string[] {
  return (["dc1", "dc2"] as const).filter((h) => livePid(path.join(hosts.dirs[h], `${vm}.pid`)) !== undefined);
}

/** Kill every QEMU left in the run dirs and remove the scratch folder. */
export async function tearDown(hosts: Hosts): Promise<void> {
  await terminateRunDirs(Object.values(hosts.dirs));
  fs.rmSync(hosts.base, { recursive: true, force: true });
}
