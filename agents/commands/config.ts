import type { Command } from "commander";
import { loadConfig } from "../../lib/config/load";
import { TeleportError } from "../../lib/errors";
import { silentLogger } from "../../lib/log/logger";
import { hostOf } from "../wiring";

/** Everything wrong with a config file, including its inventory and whether its hypervisors are there. */
export async function checkConfig(file: string): Promise<string[]> {
  try {
    const host = hostOf(loadConfig(file), silentLogger);
    const problems: string[] = [];
    for (const d of host.drivers()) {
      if (!host.inventory().some((v) => v.hypervisor === d.kind)) continue;
      const a = await d.available();
      if (!a.ok) problems.push(`inventory: ${d.kind} VMs are defined but ${d.kind} is unavailable: ${a.detail}`);
    }
    return problems;
  } catch (err) {
    const e = TeleportError.from(err);
    return e.details.length ? e.details.map((d) => `${e.reason}: ${d}`) : [e.reason];
  }
}

export function registerConfigCommands(program: Command): void {
  const config = program.command("config").description("check and show host configurations");
  config
    .command("check")
    .argument("<file>", "a host configuration (JSON)")
    .description("explain every problem in a configuration, its inventory and its hypervisors")
    .addHelpText("after", "\nExample:\n  $ sip-teleport config check /etc/sip-teleport/dc2.json")
    .action(async (file: string) => {
      const problems = await checkConfig(file);
      if (problems.length === 0) {
        process.stdout.write(`${file}: OK\n`);
        return;
      }
      for (const p of problems) process.stderr.write(`${file}: ${p}\n`);
      process.exitCode = 2;
    });
  config
    .command("show")
    .argument("[file]", "a host configuration (JSON); none = the built-in defaults")
    .description("print the effective configuration, defaults filled in, secrets masked")
    .addHelpText("after", "\nExample:\n  $ sip-teleport config show > /etc/sip-teleport/dc2.json   # start from the defaults")
    .action((file?: string) => {
      const cfg = loadConfig(file);
      const masked = JSON.stringify(cfg, (k, v: unknown) => (k === "password" || (k === "users" && v && typeof v === "object") ? maskValues(v) : v), 2);
      process.stdout.write(masked + "\n");
    });
}

function maskValues(v: unknown): unknown {
  if (typeof v === "string") return "<masked>";
  if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).map((k) => [k, "<masked>"]));
  return v;
}
