import type { Command } from "commander";
import { createDriver } from "../../lib/hypervisor/drivers";
import type { HypervisorDriver, VmDefinition } from "../../lib/hypervisor/driver";
import { loadInventory } from "../../lib/hypervisor/inventory";
import { TeleportError } from "../../lib/errors";
import { createLogger } from "../../lib/log/logger";
import type { Hypervisor } from "../../nrdl/types";

interface VmOptions {
  inventory: string;
  runDir: string;
  json?: boolean;
}

/** The host's inventory and one driver per hypervisor it uses (each on the same run dir). */
function openHost(opts: VmOptions) {
  const inventory = loadInventory(opts.inventory);
  const logger = createLogger({ level: process.env.SIP_TELEPORT_LOG ?? "warn" });
  const drivers = new Map<Hypervisor, HypervisorDriver>();
  const driverFor = (vm: VmDefinition) => {
    let d = drivers.get(vm.hypervisor);
    if (!d) drivers.set(vm.hypervisor, (d = createDriver(vm.hypervisor, { runDir: opts.runDir, inventory, logger })));
    return d;
  };
  const find = (name: string) => {
    const vm = inventory.find((v) => v.name === name);
    if (!vm) throw new TeleportError(404, `VM ${name} is not defined in ${opts.inventory}`, [`defined: ${inventory.map((v) => v.name).join(", ") || "none"}`]);
    return { vm, driver: driverFor(vm) };
  };
  return { inventory, driverFor, find };
}

async function statusLines(opts: VmOptions, names?: string[]) {
  const host = openHost(opts);
  const vms = names ? names.map((n) => host.find(n).vm) : host.inventory;
  return Promise.all(
    vms.map(async (vm) => ({ name: vm.name, hypervisor: vm.hypervisor, role: vm.role, memoryMib: vm.memoryMib, state: await host.driverFor(vm).state(vm.name) })),
  );
}

function print(rows: Awaited<ReturnType<typeof statusLines>>, json: boolean | undefined): void {
  if (json) {
    process.stdout.write(JSON.stringify(rows, null, 2) + "\n");
    return;
  }
  const width = Math.max(4, ...rows.map((r) => r.name.length));
  for (const r of rows) process.stdout.write(`${r.name.padEnd(width)}  ${r.state.padEnd(14)} ${r.hypervisor} ${r.role} ${r.memoryMib} MiB\n`);
}

/** `sip-teleport vm start|stop|list|status`: manage this host's VMs, which outlive any agent. */
export function registerVmCommands(program: Command): void {
  const vm = program
    .command("vm")
    .description("manage this host's VMs (they run on after the command or agent exits)")
    .addHelpText(
      "after",
      `
Examples:
  $ sip-teleport vm list --inventory host.json --run-dir /var/lib/sip-teleport/run
  $ sip-teleport vm start web1 --inventory host.json --run-dir /var/lib/sip-teleport/run`,
    );
  const common = (c: Command) =>
    c
      .requiredOption("-i, --inventory <file>", "this host's VM definitions (JSON)")
      .requiredOption("-r, --run-dir <dir>", "where pidfiles, monitors and serial logs live")
      .option("--json", "print JSON");
  common(vm.command("start <name>").description("start a VM defined in the inventory")).action(async (name: string, opts: VmOptions) => {
    await openHost(opts).find(name).driver.start(name);
    print(await statusLines(opts, [name]), opts.json);
  });
  common(vm.command("stop <name>").description("stop a VM (its process ends)")).action(async (name: string, opts: VmOptions) => {
    await openHost(opts).find(name).driver.stop(name);
    print(await statusLines(opts, [name]), opts.json);
  });
  common(vm.command("status <name>").description("one VM's state")).action(async (name: string, opts: VmOptions) => {
    print(await statusLines(opts, [name]), opts.json);
  });
  common(vm.command("list").description("every VM of the inventory with its state")).action(async (opts: VmOptions) => {
    print(await statusLines(opts), opts.json);
  });
}
