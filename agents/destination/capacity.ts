/**
 * What this host can receive now: free memory, free disk, free migration ports, usable hypervisors.
 * The same figures serve a capacity query (OPTIONS) and the resource check of every offer (INVITE
 * and dry run), so what a destination advertises is what it then enforces.
 */
import { existsSync, readFileSync, statfsSync } from "node:fs";
import { freemem } from "node:os";
import { dirname } from "node:path";
import type { HostConfig } from "../../lib/config/schema";
import type { Host } from "../../lib/hypervisor/host";
import { freePortsInRange } from "../../lib/net/ports";
import type { Capacity, Hypervisor, Offer, Rejected } from "../../nrdl/types";
import { SUPPORTED_VERSIONS } from "../../nrdl/types";

/** MemAvailable (what can be allocated without swapping), else free memory. */
export function memoryAvailableMib(): number {
  const meminfo = existsSync("/proc/meminfo") ? readFileSync("/proc/meminfo", "utf8") : "";
  const kib = /^MemAvailable:\s+(\d+) kB/m.exec(meminfo)?.[1];
  return Math.floor(kib ? Number(kib) / 1024 : freemem() / 2 ** 20);
}

/** Free space for unprivileged writers on the file system holding `dir` (or its nearest existing parent). */
export function diskFreeMib(dir: string): number {
  let at = dir;
  while (!existsSync(at) && dirname(at) !== at) at = dirname(at);
  const fs = statfsSync(at);
  return Math.floor((fs.bavail * fs.bsize) / 2 ** 20);
}

export interface Resources {
  memoryFreeMib: number;
  diskFreeMib: number;
  /** Migration ports that can be bound now (up to the number asked for). */
  ports: number[];
}

export async function resources(config: HostConfig, wantPorts = Infinity): Promise<Resources> {
  const { address, ports } = config.migration;
  return {
    memoryFreeMib: memoryAvailableMib(),
    diskFreeMib: Math.min(diskFreeMib(config.runDir), diskFreeMib(config.stateDir)),
    ports: await freePortsInRange(address, ports, wantPorts),
  };
}

/** Why this host cannot take `offer` as a whole, one line per shortage (none: it can). */
export function shortages(offer: Offer, have: Resources, config: HostConfig): string[] {
  const { memoryReserveMib, minFreeDiskMib, ports } = config.migration;
  const memory = offer.vms.reduce((sum, vm) => sum + vm.memoryMib, 0);
  const out: string[] = [];
  if (memory + memoryReserveMib > have.memoryFreeMib)
    out.push(
      `not enough memory: the offer needs ${memory} MiB plus ${memoryReserveMib} MiB reserve, ` +
        `${have.memoryFreeMib} MiB available`,
    );
  if (have.diskFreeMib < minFreeDiskMib)
    out.push(`not enough disk space: ${have.diskFreeMib} MiB free, ${minFreeDiskMib} MiB required`);
  if (have.ports.length < offer.vms.length)
    out.push(`not enough migration ports: ${offer.vms.length} needed, ${have.ports.length} free in ${ports}`);
  return out;
}

/** Every VM of the offer refused for the host's shortages (an offer is taken whole or not at all). */
export function shortageRejections(offer: Offer, lines: string[]): Rejected[] {
  return lines.length ? offer.vms.map((vm) => ({ vm: vm.name, reason: lines.join("; ") })) : [];
}

/** The capacity body of an OPTIONS answer. */
export async function capacityOf(config: HostConfig, host: Host): Promise<Capacity> {
  const have = await resources(config);
  const usable: Hypervisor[] = [];
  let receivable = 0;
  for (const driver of host.drivers()) {
    if (!(await driver.available()).ok) continue;
    usable.push(driver.kind);
    for (const def of driver.inventory()) {
      const state = await driver.state(def.name).catch(() => "absent");
      if (state === "absent" || state === "stopped") receivable++;
    }
  }
  return {
    kind: "capacity",
    host: config.host,
    memoryFreeMib: Math.max(0, have.memoryFreeMib - config.migration.memoryReserveMib),
    diskFreeMib: have.diskFreeMib,
    portsFree: have.ports.length,
    vmsReceivable: receivable,
    hypervisors: usable.sort().join(" "),
    versions: SUPPORTED_VERSIONS.join(" "),
  };
}
