/**
 * From a host's configuration to the running parts: its hypervisors (one driver per kind in the
 * inventory) and its SIP backend. Shared by every command so `listen`, `migrate`, `vm` and
 * `console` see the same host the same way.
 */
import { readFileSync } from "node:fs";
import { TeleportError } from "../lib/errors";
import type { HostConfig } from "../lib/config/schema";
import type { VmDefinition } from "../lib/hypervisor/driver";
import { createDriver } from "../lib/hypervisor/drivers";
import { Host } from "../lib/hypervisor/host";
import { loadInventory, parseInventory } from "../lib/hypervisor/inventory";
import type { Logger } from "../lib/log/logger";
import { createSipBackend, type SipConfig, type SipJsBackend } from "../lib/sip";
import type { Hypervisor } from "../nrdl/types";

export function inventoryOf(cfg: HostConfig): VmDefinition[] {
  return typeof cfg.inventory === "string"
    ? loadInventory(cfg.inventory)
    : parseInventory({ vms: cfg.inventory }, process.cwd(), "config inventory");
}

export function hostOf(cfg: HostConfig, logger: Logger): Host {
  const inventory = inventoryOf(cfg);
  const kinds = new Set<Hypervisor>(["qemu", ...inventory.map((v) => v.hypervisor)]);
  return new Host([...kinds].map((kind) => createDriver(kind, { runDir: cfg.runDir, inventory, logger })));
}

export interface SipOverrides {
  /** Listen on ephemeral ports (a one-shot source must not clash with a destination agent on the same host). */
  ephemeral?: boolean;
  outboundProxy?: string;
  trace?: boolean;
}

function readPem(file: string, field: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new TeleportError(500, `cannot read ${field}`, [(err as Error).message]);
  }
}

export function sipConfigOf(cfg: HostConfig, logger: Logger, o: SipOverrides = {}): SipConfig {
  return {
    aor: cfg.sip.aor,
    listen: cfg.sip.listen.map((l) => ({ transport: l.transport, host: l.address, port: o.ephemeral ? 0 : l.port })),
    tls: cfg.sip.tls && {
      cert: readPem(cfg.sip.tls.cert, "sip.tls.cert"),
      key: readPem(cfg.sip.tls.key, "sip.tls.key"),
      ca: cfg.sip.tls.ca ? readPem(cfg.sip.tls.ca, "sip.tls.ca") : undefined,
      rejectUnauthorized: cfg.sip.tls.verify,
    },
    outboundProxy: o.outboundProxy ?? cfg.sip.outboundProxy,
    registrar: cfg.sip.registrar,
    credentials: cfg.sip.credentials,
    sipTrace: o.trace ?? cfg.sip.trace,
    logger,
    limits: {
      maxMessageBytes: cfg.limits.maxMessageBytes,
      maxHeaders: cfg.limits.maxHeaders,
      maxConnections: cfg.limits.maxConnections,
      maxConnectionsPerAddress: cfg.limits.maxConnectionsPerAddress,
      connectionIdleS: cfg.limits.connectionIdleS,
      invitesPerSecond: cfg.limits.invitesPerSecond,
      trustedProxies: cfg.limits.trustedProxies,
    },
  };
}

export function sipOf(cfg: HostConfig, logger: Logger, o: SipOverrides = {}): SipJsBackend {
  return createSipBackend(sipConfigOf(cfg, logger, o));
}
