/**
 * The operator console: the source agent behind a web page and a JSON API (server.ts), one
 * call at a time on its line (session.ts), past dialogs on disk (history.ts), and SIP MESSAGE
 * as a trigger (message-trigger.ts). `startConsole` wires them onto a started SIP backend.
 */
import fs from "node:fs";
import path from "node:path";
import { DestinationPolicy } from "../../lib/access/destinations";
import type { HostConfig } from "../../lib/config/schema";
import type { Host } from "../../lib/hypervisor/host";
import type { Logger } from "../../lib/log/logger";
import type { AgentMetrics } from "../../lib/metrics/metrics";
import type { SipBackend } from "../../lib/sip/backend";
import { SourceAgent } from "../source/agent";
import { Evacuation } from "../source/evacuate";
import { HistoryStore } from "./history";
import { MessageTrigger } from "./message-trigger";
import { ConsoleServer } from "./server";
import { ConsoleLine } from "./session";

export interface ConsoleOptions {
  config: HostConfig;
  sip: SipBackend;
  host: Host;
  logger: Logger;
  /** "address:port" for the page and API (default: the config's console.http). */
  listen?: string;
  /** Prometheus metrics (`console --metrics`), when exported. */
  metrics?: AgentMetrics;
}

export interface RunningConsole {
  url: string;
  /** The bearer token clients must send. */
  token: string;
  tokenGenerated: boolean;
  /** Where a generated token was written (mode 0600), for local scripts run as the agent's user. */
  tokenFile?: string;
  line: ConsoleLine;
  stop(): Promise<void>;
}

export async function startConsole(o: ConsoleOptions): Promise<RunningConsole> {
  const logger = o.logger.child({ agent: "console" });
  const destinations = new DestinationPolicy(o.config.security.destinations);
  const agent = new SourceAgent({
    sip: o.sip,
    host: o.host,
    hostName: o.config.host,
    stateDir: o.config.stateDir,
    compress: o.config.defaults.compress,
    dedup: o.config.defaults.dedup,
    dedupIndexPages: o.config.migration.dedupIndexPages,
    logger,
    answerTimeoutS: o.config.timers.answerTimeoutS,
    postcopyRecoveryS: o.config.timers.postcopyRecoveryS,
    redirectAllowed: (target) => destinations.check(target),
    migrationNetworks: (target) => destinations.migrationNetworks(target),
  });
  await agent.recover();
  const history = new HistoryStore(o.config.stateDir);
  const line = new ConsoleLine(agent, history);
  const trigger = new MessageTrigger({ config: o.config, host: o.host, sip: o.sip, line, logger });
  // the live ladder: every message the backend sends and receives
  const stopTrace = o.sip.onTrace((e) => line.trace(e));
  const metrics = o.metrics;
  const stopMetrics = metrics ? countDialogs(metrics, o.sip, line) : () => undefined;
  o.sip.setHandlers({ admit: (req) => trigger.admit(req), onMessage: (req, res) => trigger.handle(req, res) });
  const server = new ConsoleServer({
    config: o.config,
    host: o.host,
    line,
    evacuation: new Evacuation({ agent, sip: o.sip, host: o.host, hostName: o.config.host, logger }),
    history,
    logger,
    listen: o.listen ?? o.config.console.http,
  });
  const url = await server.start();
  const tokenFile = server.tokenGenerated ? writeTokenFile(o.config.stateDir, server.token) : undefined;
  logger.info("console ready", { url, tokenFile });
  return {
    url,
    token: server.token,
    tokenGenerated: server.tokenGenerated,
    tokenFile,
    line,
    stop: async () => {
      stopTrace();
      stopMetrics();
      await server.stop();
      if (tokenFile) fs.rmSync(tokenFile, { force: true });
    },
  };
}

/** The generated token, readable by the agent's own user only (a fresh file each start: no other owner's). */
function writeTokenFile(stateDir: string, token: string): string {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const file = path.join(stateDir, "console.token");
  fs.rmSync(file, { force: true });
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    fs.writeSync(fd, `${token}\n`);
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

/** Console metrics: SIP messages from the trace, dialogs and moves from each history record. */
function countDialogs(metrics: AgentMetrics, sip: SipBackend, line: ConsoleLine): () => void {
  const stopTrace = sip.onTrace((e) => metrics.observe(e));
  const unsubscribe = line.subscribe((e) => {
    if (e.type !== "history") return;
    const r = e.record;
    if (r.outcome === "refused") metrics.refused(r.error?.status ?? 500);
    else metrics.dialogEnded(r.outcome, r.error?.status ?? (r.outcome === "cancelled" ? 487 : 200));
    for (const vm of r.summary?.vms ?? []) if (vm.state === "completed") metrics.moved(vm);
  });
  return () => {
    stopTrace();
    unsubscribe();
  };
}
