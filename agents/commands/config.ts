import { existsSync } from "node:fs";
import type { Command } from "commander";
import { loadConfig } from "../../lib/config/load";
import { TeleportError } from "../../lib/errors";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { silentLogger } from "../../lib/log/logger";
import { hostOf } from "../wiring";

/** Kernels, initrds and disks the inventory names but this machine does not hold. */
function missingImages(vms: readonly VmDefinition[]): string[] {
  const files = vms.flatMap((vm) => [
    ...(["kernel", "initrd"] as const).map((field) => ({ vm: vm.name, field: field as string, file: vm[field] })),
    // a copied disk is created here when the VM arrives; only a shared one must exist already
    ...vm.disks
      .filter((d) => d.mode === "shared")
      .map((d) => ({ vm: vm.name, field: `disk ${d.target}`, file: d.file as string | undefined })),
    ...vm.disks.flatMap((d) =>
      d.backing ? [{ vm: vm.name, field: `disk ${d.target} backing`, file: d.backing }] : [],
    ),
  ]);
  return files
    .filter((f) => f.file !== undefined && !existsSync(f.file))
    .map((f) => `inventory: vm ${f.vm}: ${f.field} ${f.file} does not exist`);
}

/**
 * Everything wrong with a config file, including its inventory, its VM images and whether its
 * hypervisors are there. `images: false` skips the image files (checking a config on a machine
 * that does not hold the images, e.g. in CI or before copying them).
 */
export async function checkConfig(file: string, opts: { images?: boolean } = {}): Promise<string[]> {
  try {
    const host = hostOf(loadConfig(file), silentLogger);
    const problems: string[] = opts.images === false ? [] : missingImages(host.inventory());
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
    .option("--no-images", "do not require the VMs' kernel, initrd and disk files to exist on this machine")
    .description("explain every problem in a configuration, its inventory, its VM images and its hypervisors")
    .addHelpText(
      "after",
      "\nExamples:\n  $ sip-teleport config check /etc/sip-teleport/dc2.json\n  $ sip-teleport " +
        "config check --no-images deploy/config/dc2.json   # before the images are copied",
    )
    .action(async (file: string, o: { images: boolean }) => {
      const problems = await checkConfig(file, { images: o.images });
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
    .addHelpText(
      "after",
      "\nExample:\n  $ sip-teleport config show > /etc/sip-teleport/dc2.json   # start from the defaults",
    )
    .action((file?: string) => {
      const cfg = loadConfig(file);
      const masked = JSON.stringify(
        cfg,
        (k, v: unknown) => (k === "password" || (k === "users" && v && typeof v === "object") ? maskValues(v) : v),
        2,
      );
      process.stdout.write(masked + "\n");
    });
}

function maskValues(v: unknown): unknown {
  if (typeof v === "string") return "<masked>";
  if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).map((k) => [k, "<masked>"]));
  return v;
}
