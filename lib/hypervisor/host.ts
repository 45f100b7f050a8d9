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

  /** VM name -> where it lives; inventories are fixed when a host starts, so lookups are O(1). */
  private readonly byName = new Map<string, LocalVm>();

  constructor(drivers: readonly HypervisorDriver[]) {
    for (const d of drivers) this.byKind.set(d.kind, d);
    for (const driver of this.byKind.values())
      for (const def of driver.inventory()) if (!this.byName.has(def.name)) this.byName.set(def.name, { def, driver });
  }

  drivers(): HypervisorDriver[] {
    return [...this.byKind.values()];
  }

  driver(kind: Hypervisor): HypervisorDriver | undefined {
    return this.byKind.get(kind);
  }

  /** The VM as defined here, with the driver that runs it, or undefined when this host does not define it. */
  find(name: string): LocalVm | undefined {
    return this.byName.get(name);
  }

  inventory(): VmDefinition[] {
    return this.drivers().flatMap((d) => d.inventory());
  }
}
