import type { Command } from "commander";
import { DestinationPolicy } from "../../lib/access/destinations";
import { loadConfig } from "../../lib/config/load";
import type { HostConfig } from "../../lib/config/schema";
import { TeleportError } from "../../lib/errors";
import { createLogger, type Logger } from "../../lib/log/logger";
import { serveMetrics, type MetricsServer } from "../../lib/metrics/http";
import { AgentMetrics } from "../../lib/metrics/metrics";

export interface CommonOptions {
  config?: string;
  sipTrace?: boolean;
  logLevel?: string;
  logFormat?: "text" | "json";
}

/** --config, --sip-trace, --log-level, --log-format: every command that runs an agent takes them. */
export function withCommonOptions(cmd: Command): Command {
  return cmd
    .option(
      "-c, --config <file>",
      "this host's configuration (JSON); defaults work on loopback",
      process.env.SIP_TELEPORT_CONFIG,
    )
    .option("--sip-trace", "log every SIP message sent and received (credentials masked)")
    .option("--log-level <level>", "error | warn | info | verbose | debug")
    .option("--log-format <format>", "text | json");
}

export function setup(o: CommonOptions): { cfg: HostConfig; logger: Logger } {
  const cfg = loadConfig(o.config);
  const logger = createLogger({ level: o.logLevel ?? cfg.log.level, format: o.logFormat ?? cfg.log.format });
  return { cfg, logger };
}

/** Print a TeleportError the way an operator wants it: status, reason, then one line per detail. */
export function reportError(err: unknown): TeleportError {
  const e = TeleportError.from(err);
  process.stderr.write(`sip-teleport: ${e.status} ${e.reason}\n`);
  for (const d of e.details) process.stderr.write(`  ${d}\n`);
  return e;
}

/** "udp 127.0.0.1:5060, tcp 127.0.0.1:5060": where a daemon's SIP endpoint listens. */
export function listenersText(listeners: ReadonlyArray<{ transport: string; host: string; port: number }>): string {
  return listeners.map((l) => `${l.transport} ${l.host}:${l.port}`).join(", ");
}

/** A daemon ends cleanly on SIGINT or SIGTERM: `stop` runs once, then the process exits 0. */
export function stopOnSignals(stop: () => Promise<void>): void {
  const once = () => void stop().finally(() => process.exit(0));
  process.once("SIGINT", once);
  process.once("SIGTERM", once);
}

/** `--metrics [address:port]`: where GET /metrics listens (the flag alone: 127.0.0.1:9464). */
export function withMetricsOption(cmd: Command): Command {
  return cmd.option(
    "--metrics [address:port]",
    "export Prometheus metrics on GET /metrics (default address 127.0.0.1:9464; config: metrics.http)",
  );
}

/** Metrics for an agent when asked for (flag or config), served at once; undefined otherwise. */
export async function metricsFor(
  role: "destination" | "console",
  cfg: HostConfig,
  flag: string | boolean | undefined,
): Promise<{ metrics: AgentMetrics; server: MetricsServer } | undefined> {
  const listen = typeof flag === "string" ? flag : flag ? "127.0.0.1:9464" : cfg.metrics.http;
  if (!listen) return undefined;
  const metrics = new AgentMetrics(role);
  const server = await serveMetrics(metrics.registry, listen);
  process.stdout.write(`metrics at ${server.url}\n`);
  return { metrics, server };
}

/**
 * security.destinations for a command's --to targets: a target it does not permit is refused (403)
 * before anything is sent, unless the operator said --allow-unlisted-destination (then a warning).
 * Returns the policy, which redirects are checked against too.
 */
export function permittedDestinations(
  cfg: HostConfig,
  targets: readonly string[],
  allowUnlisted: boolean | undefined,
  logger: Logger,
): DestinationPolicy {
  const destinations = new DestinationPolicy(cfg.security.destinations);
  for (const to of targets) {
    const unlisted = destinations.check(to);
    if (unlisted && !allowUnlisted)
      throw new TeleportError(403, "destination not permitted", [
        unlisted,
        "add it to security.destinations, or pass --allow-unlisted-destination to send there this once",
      ]);
    if (unlisted) logger.warn("sending to an unlisted destination (--allow-unlisted-destination)", { to });
  }
  return destinations;
}
