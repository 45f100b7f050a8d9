import type { Command } from "commander";
import { loadConfig } from "../../lib/config/load";
import { TeleportError } from "../../lib/errors";
import type { Host } from "../../lib/hypervisor/host";
import { createLogger } from "../../lib/log/logger";
import { hostOf } from "../wiring";

interface VmOptions {
  config?: string;
  inventory?: string;
  runDir?: string;
  json?: boolean;
}

/** The host as its config describes it; --inventory and --run-dir override the config's. */
function openHost(opts: VmOptions): Host {
  const cfg = loadConfig(opts.config);
  if (opts.inventory) cfg.inventory = opts.inventory;
  if (opts.runDir) cfg.runDir = opts.runDir;
  return hostOf(cfg, createLogger({ level: process.env.SIP_TELEPORT_LOG ?? "warn" }));
}

function find(host: Host, name: string) {
  const vm = host.find(name);
  if (!vm)
    throw new TeleportError(404, `VM ${name} is not defined on this host`, [
      `defined: ${
        host
          .inventory()
          .map((v) => v.name)
          .join(", ") || "none"
      }`,
    ]);
  return vm;
}

async function statusLines(host: Host, names?: string[]) {
  const vms = names ? names.map((n) => find(host, n).def) : host.inventory();
  return Promise.all(
    vms.map(async (vm) => ({
      name: vm.name,
      hypervisor: vm.hypervisor,
      role: vm.role,
      memoryMib: vm.memoryMib,
      state: await find(host, vm.name).driver.state(vm.name),
    })),
  );
}

function print(rows: Awaited<ReturnType<typeof statusLines>>, json: boolean | undefined): void {
  if (json) {
    process.stdout.write(JSON.stringify(rows, null, 2) + "\n");
    return;
  }
  const width = Math.max(4, ...rows.map((r) => r.name.length));
  for (const r of rows)
    process.stdout.write(
      `${r.name.padEnd(width)}  ${r.state.padEnd(14)} ${r.hypervisor} ${r.role} ${r.memoryMib} MiB\n`,
    );
}

/** What `vm list` says when there is nothing to list: which configuration and inventory it read, and how to fix it. */
function emptyInventoryText(opts: VmOptions): string {
  const cfg = loadConfig(opts.config);
  const config = opts.config
    ? `configuration ${opts.config}`
    : "no configuration (the defaults; give -c or SIP_TELEPORT_CONFIG)";
  const inventory =
    opts.inventory ?? (typeof cfg.inventory === "string" ? cfg.inventory : "inline in the configuration");
  return `no VMs: the inventory is empty\n  used ${config}\n  inventory: ${inventory}\n`;
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
  $ sip-teleport vm list --config /etc/sip-teleport/dc1.json
  $ sip-teleport vm start web1 --inventory host.json --run-dir /var/lib/sip-teleport/run`,
    );
  const common = (c: Command) =>
    c
      .option(
        "-c, --config <file>",
        "this host's configuration (its inventory and run dir)",
        process.env.SIP_TELEPORT_CONFIG,
      )
      .option("-i, --inventory <file>", "this host's VM definitions (JSON), instead of the config's")
      .option("-r, --run-dir <dir>", "where pidfiles, monitors and serial logs live, instead of the config's")
      .option("--json", "print JSON");
  common(vm.command("start <name>").description("start a VM defined in the inventory")).action(
    async (name: string, opts: VmOptions) => {
      const host = openHost(opts);
      await find(host, name).driver.start(name);
      print(await statusLines(host, [name]), opts.json);
    },
  );
  common(vm.command("stop <name>").description("stop a VM (its process ends)")).action(
    async (name: string, opts: VmOptions) => {
      const host = openHost(opts);
      await find(host, name).driver.stop(name);
      print(await statusLines(host, [name]), opts.json);
    },
  );
  common(vm.command("status <name>").description("one VM's state")).action(async (name: string, opts: VmOptions) => {
    print(await statusLines(openHost(opts), [name]), opts.json);
  });
  common(vm.command("list").description("every VM of the inventory with its state")).action(async (opts: VmOptions) => {
    const rows = await statusLines(openHost(opts));
    if (rows.length === 0 && !opts.json) process.stdout.write(emptyInventoryText(opts));
    else print(rows, opts.json);
  });
}
