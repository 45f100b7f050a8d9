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
import { createSipBackend, type BoundListener, type SipBackend, type SipConfig } from "../lib/sip";
import { DrachtioBackend, type DrachtioConnection } from "../lib/sip/drachtio-backend";
import type { Hypervisor } from "../nrdl/types";

export function inventoryOf(cfg: HostConfig): VmDefinition[] {
  return typeof cfg.inventory === "string"
    ? loadInventory(cfg.inventory)
    : parseInventory({ vms: cfg.inventory }, process.cwd(), "config inventory");
}

export function hostOf(cfg: HostConfig, logger: Logger): Host {
  const inventory = inventoryOf(cfg);
  const kinds = new Set<Hypervisor>(["qemu", ...inventory.map((v) => v.hypervisor)]);
  return new Host(
    [...kinds].map((kind) => createDriver(kind, { runDir: cfg.runDir, inventory, logger, libvirt: cfg.libvirt })),
  );
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
      clientCa:
        cfg.sip.tls.clientCa &&
        [cfg.sip.tls.clientCa]
          .flat()
          .map((f) => readPem(f, "sip.tls.clientCa"))
          .join("\n"),
    },
    outboundProxy: o.outboundProxy ?? cfg.sip.outboundProxy,
    registrar: cfg.sip.registrar,
    credentials: cfg.sip.credentials,
    sipTrace: o.trace ?? cfg.sip.trace,
    timerT1Ms: cfg.sip.timerT1Ms,
    logger,
    limits: {
      maxMessageBytes: cfg.limits.maxMessageBytes,
      maxHeaders: cfg.limits.maxHeaders,
      maxConnections: cfg.limits.maxConnections,
      maxConnectionsPerAddress: cfg.limits.maxConnectionsPerAddress,
      connectionIdleS: cfg.limits.connectionIdleS,
      invitesPerSecond: cfg.limits.invitesPerSecond,
      trustedProxies: cfg.limits.trustedProxies,
      maxRetransmissionTimers: cfg.limits.maxRetransmissionTimers,
    },
  };
}

/** A backend the agents run on, with the SIP addresses it is reachable at (known after start). */
export type AgentSip = SipBackend & { readonly listeners: BoundListener[] };

export function sipOf(cfg: HostConfig, logger: Logger, o: SipOverrides = {}): AgentSip {
  const config = sipConfigOf(cfg, logger, o);
  if (cfg.sip.backend === "drachtio") return new DrachtioBackend({ ...config, drachtio: drachtioOf(cfg) });
  return createSipBackend(config);
}

/** The drachtio-server connection of a config, its secret read from the file or environment named there. */
export function drachtioOf(cfg: HostConfig): DrachtioConnection {
  const d = cfg.sip.drachtio;
  if (!d) throw new TeleportError(500, 'sip.backend "drachtio" needs sip.drachtio');
  let secret: string | undefined;
  if (d.secretFile !== undefined) secret = readPem(d.secretFile, "sip.drachtio.secretFile").split(/\r?\n/)[0].trim();
  else if (d.secretEnv !== undefined) secret = process.env[d.secretEnv];
  if (!secret)
    throw new TeleportError(500, "no drachtio-server secret", [
      d.secretFile !== undefined
        ? `sip.drachtio.secretFile ${d.secretFile} is empty`
        : `environment variable ${d.secretEnv} is not set`,
    ]);
  return { host: d.host, port: d.port, secret };
}
