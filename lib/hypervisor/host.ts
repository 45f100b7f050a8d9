/**
 * A host's hypervisors seen as one: which driver owns which VM of the local inventory.
 * The agents look VMs up here and never hold a driver-specific handle.
 */
import type { Hypervisor } from "../../nrdl/types";
import type { HypervisorDriver, VmDefinition } from "./driver";

export interface LocalVm {
  def: VmDefinition;
  driver: HypervisorDriver;
}

export class Host {
  private readonly byKind = new Map<Hypervisor, HypervisorDriver>();

  constructor(drivers: readonly HypervisorDriver[]) {
    for (const d of drivers) this.byKind.set(d.kind, d);
  }

  drivers(): HypervisorDriver[] {
    return [...this.byKind.values()];
  }

  driver(kind: Hypervisor): HypervisorDriver | undefined {
    return this.byKind.get(kind);
  }

  /** The VM as defined here, with the driver that runs it, or undefined when this host does not define it. */
  find(name: string): LocalVm | undefined {
    for (const driver of this.byKind.values()) {
      const def = driver.inventory().find((d) => d.name === name);
      if (def) return { def, driver };
    }
    return undefined;
  }

  inventory(): VmDefinition[] {
    return this.drivers().flatMap((d) => d.inventory());
  }
}
