/**
 * LoadDriver — a BENCHMARK driver, never one to run VMs with. It stands in for a hypervisor kind
 * (qemu by default) so a destination agent can be driven by sipp at high call rates and the
 * figures measure the signalling alone: arming only records the VM as waiting, disarming
 * forgets it, and no migration ever arrives. `npm run bench:load` is its only user.
 */
import { TeleportError } from "../errors";
import type { Hypervisor } from "../../nrdl/types";
import type { ArmOptions, ArmedListener, HypervisorDriver, MigrationHandle, VmDefinition, VmRunState } from "./driver";

export interface LoadDriverOptions {
  /** The hypervisor kind it answers for (offers name it). */
  kind?: Hypervisor;
  /** How many VMs it defines: `${prefix}1` .. `${prefix}${count}`, 96 MiB, 1 cpu, role router. */
  count: number;
  prefix?: string;
}

export class LoadDriver implements HypervisorDriver {
  readonly kind: Hypervisor;
  private readonly defs: VmDefinition[];
  private readonly names: Set<string>;
  private readonly waiting = new Set<string>();

  constructor(opts: LoadDriverOptions) {
    this.kind = opts.kind ?? "qemu";
    const prefix = opts.prefix ?? "router";
    this.defs = Array.from({ length: opts.count }, (_x, i) => ({
      name: `${prefix}${i + 1}`,
      hypervisor: this.kind,
      role: "router" as const,
      disks: [],
      memoryMib: 96,
      cpus: 1,
      nics: [],
    }));
    this.names = new Set(this.defs.map((d) => d.name));
  }

  /** Listeners currently "armed" (a leak shows here). */
  get armedCount(): number {
    return this.waiting.size;
  }

  async available(): Promise<{ ok: boolean; detail: string }> {
    return { ok: true, detail: "load driver (benchmark): arms nothing" };
  }

  inventory(): VmDefinition[] {
    return this.defs;
  }

  async state(vm: string): Promise<VmRunState> {
    this.known(vm);
    return this.waiting.has(vm) ? "incoming" : "absent";
  }

  async start(vm: string): Promise<void> {
    throw new TeleportError(501, `load driver (benchmark) does not run VMs: cannot start ${vm}`);
  }

  async stop(vm: string): Promise<void> {
    this.waiting.delete(this.known(vm));
  }

  async arm(vm: string, opts: ArmOptions): Promise<ArmedListener> {
    this.waiting.add(this.known(vm));
    return { vm, uri: `tcp:${opts.address}:${opts.port ?? 0}`, exports: [] };
  }

  async disarm(vm: string): Promise<void> {
    this.waiting.delete(this.known(vm));
  }

  async waitResumed(vm: string): Promise<void> {
    throw new TeleportError(501, `load driver (benchmark): ${vm} never arrives`);
  }

  migrate(vm: string): MigrationHandle {
    throw new TeleportError(501, `load driver (benchmark) does not migrate: ${vm}`);
  }

  private known(vm: string): string {
    if (!this.names.has(vm)) throw new TeleportError(404, `VM ${vm} is not defined on this host`);
    return vm;
  }
}
