import { existsSync } from "node:fs";
import type { Command } from "commander";
import { destinationUri } from "../../lib/access/destinations";
import { loadConfig } from "../../lib/config/load";
import type { HostConfig } from "../../lib/config/schema";
import { TeleportError } from "../../lib/errors";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { silentLogger } from "../../lib/log/logger";
import { probeDrachtio } from "../../lib/sip/drachtio/probe";
import { drachtioOf, hostOf } from "../wiring";
import { weakenedDoorSettings } from "../../lib/config/weakened";

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

const isTls = (uri: string) => /^sips:/i.test(uri) || /;transport=tls\b/i.test(uri);

/**
 * What is allowed but unsafe: every setting that weakens a default, e.g. destinations reached without TLS
 * certificate verification, where nothing proves the peer that answers (and receives the memory) is the real one.
 */
export function configWarnings(cfg: HostConfig): string[] {
  return [...weakenedDoorSettings(cfg), ...destinationWarnings(cfg)];
}

function destinationWarnings(cfg: HostConfig): string[] {
  const targets = [...new Set([...cfg.security.destinations.map(destinationUri), ...cfg.console.destinations])];
  const proxy = cfg.sip.outboundProxy;
  const reached = targets.flatMap((target) => {
    const hop = proxy ?? target;
    const via = proxy ? ` through sip.outboundProxy ${proxy}` : "";
    if (!isTls(hop))
      return [
        `${target} is reached${via} without TLS: nothing proves the peer is the real destination ` +
          `(use ;transport=tls${proxy ? " on the proxy URI" : ""} and sip.tls.ca to verify its certificate)`,
      ];
    if (cfg.sip.backend === "drachtio")
      return [
        `${target} is reached${via} over TLS made by drachtio-server: sip.tls (ca, verify) does not apply, ` +
          "and the agent cannot see whether the server checked the destination's certificate",
      ];
    if (cfg.sip.tls?.verify === false)
      return [`${target} is reached${via} over TLS with sip.tls.verify false: its certificate is not checked`];
    return [];
  });
  return [...reached, ...migrationNetworkWarnings(cfg)];
}

/** migrationNetworks widen where a destination's answer may send the VMs' memory and disks: say where. */
function migrationNetworkWarnings(cfg: HostConfig): string[] {
  return cfg.security.destinations.flatMap((e) =>
    typeof e !== "string" && e.migrationNetworks.length
      ? [
          `security.destinations: ${e.uri} may put its listeners and NBD exports in ` +
            `${e.migrationNetworks.join(", ")} besides the address it is called on (migrationNetworks)`,
        ]
      : [],
  );
}

/**
 * Everything wrong with a config file, including its inventory, its VM images and whether its
 * hypervisors are there. `images: false` skips the image files (checking a config on a machine
 * that does not hold the images, e.g. in CI or before copying them).
 */
export async function checkConfig(file: string, opts: { images?: boolean } = {}): Promise<string[]> {
  try {
    const cfg = loadConfig(file);
    const host = hostOf(cfg, silentLogger);
    const problems: string[] = opts.images === false ? [] : missingImages(host.inventory());
    problems.push(...(await drachtioProblems(cfg)));
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

/** With the drachtio backend: is the secret there, and does the server answer and accept it. */
async function drachtioProblems(cfg: HostConfig): Promise<string[]> {
  if (cfg.sip.backend !== "drachtio") return [];
  try {
    const conn = drachtioOf(cfg);
    const r = await probeDrachtio(conn);
    return r.ok ? [] : [`sip.drachtio: drachtio-server does not answer: ${r.detail}`];
  } catch (err) {
    const e = TeleportError.from(err);
    return [`sip.drachtio: ${[e.reason, ...e.details].join(": ")}`];
  }
}

export function registerConfigCommands(program: Command): void {
  const config = program.command("config").description("check and show host configurations");
  config
    .command("check")
    .argument("<file>", "a host configuration (JSON)")
    .option("--no-images", "do not require the VMs' kernel, initrd and disk files to exist on this machine")
    .description(
      "explain every problem in a configuration, its inventory, its VM images and its hypervisors; " +
        "warn about every setting that weakens a default (loopback trusted, destinations without TLS " +
        "verification, legacy digest)",
    )
    .addHelpText(
      "after",
      "\nExamples:\n  $ sip-teleport config check /etc/sip-teleport/dc2.json\n  $ sip-teleport " +
        "config check --no-images deploy/config/dc2.json   # before the images are copied",
    )
    .action(async (file: string, o: { images: boolean }) => {
      const problems = await checkConfig(file, { images: o.images });
      if (problems.length === 0) {
        for (const w of configWarnings(loadConfig(file))) process.stderr.write(`${file}: warning: ${w}\n`);
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
