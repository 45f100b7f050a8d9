/**
 * Which driver runs which hypervisor. Adding one is one new file plus one line here.
 * Each driver gets the VMs of its own kind from the host's inventory.
 */
import { TeleportError } from "../errors";
import type { Logger } from "../log/logger";
import type { Hypervisor } from "../../nrdl/types";
import type { AccelChoice } from "./accel";
import type { HypervisorDriver, VmDefinition } from "./driver";
import { LibvirtDriver } from "./libvirt";
import { LoadDriver, type LoadDriverOptions } from "./load";
import { QemuDriver } from "./qemu";
import { VirtualBoxDriver } from "./virtualbox";

export interface DriverOptions {
  /** This host's run directory: pidfiles, monitors, logs, short-lived password files. */
  runDir: string;
  /** The host's whole inventory; each driver keeps the VMs of its kind. */
  inventory: VmDefinition[];
  logger?: Logger;
  qemu?: { binary?: string; accel?: AccelChoice; startTimeoutMs?: number; migrationTls?: boolean };
  virtualbox?: { vboxManage?: string };
  libvirt?: { virsh?: string; stream?: "native" | "tunnelled" };
}

type Factory = (opts: DriverOptions) => HypervisorDriver;

const FACTORIES: Partial<Record<Hypervisor, Factory>> = {
  qemu: (o) =>
    new QemuDriver({
      runDir: o.runDir,
      inventory: o.inventory,
      logger: o.logger,
      qemuBinary: o.qemu?.binary,
      accel: o.qemu?.accel,
      startTimeoutMs: o.qemu?.startTimeoutMs,
      migrationTls: o.qemu?.migrationTls,
    }),
  virtualbox: (o) =>
    new VirtualBoxDriver({
      runDir: o.runDir,
      inventory: o.inventory,
      logger: o.logger,
      vboxManage: o.virtualbox?.vboxManage,
    }),
  libvirt: (o) =>
    new LibvirtDriver({
      runDir: o.runDir,
      inventory: o.inventory,
      logger: o.logger,
      virsh: o.libvirt?.virsh,
      stream: o.libvirt?.stream,
    }),
};

export function createDriver(kind: Hypervisor, opts: DriverOptions): HypervisorDriver {
  const factory = FACTORIES[kind];
  if (!factory)
    throw new TeleportError(501, `no ${kind} driver in this build`, [
      `available: ${Object.keys(FACTORIES).join(", ")}`,
    ]);
  return factory(opts);
}

/**
 * Benchmark drivers: they stand in for a hypervisor to measure the agents alone and are never
 * chosen from a host's configuration. `load` arms nothing (bench:load).
 */
const BENCHMARK_DRIVERS = {
  load: (o: LoadDriverOptions): HypervisorDriver => new LoadDriver(o),
};

export function createBenchmarkDriver(name: keyof typeof BENCHMARK_DRIVERS, opts: LoadDriverOptions): HypervisorDriver {
  return BENCHMARK_DRIVERS[name](opts);
}
