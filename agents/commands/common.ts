import type { Command } from "commander";
import { loadConfig } from "../../lib/config/load";
import type { HostConfig } from "../../lib/config/schema";
import { TeleportError } from "../../lib/errors";
import { createLogger, type Logger } from "../../lib/log/logger";

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
