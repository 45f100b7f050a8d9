import type { Command } from "commander";
import { hostOf, sipOf } from "../wiring";
import { DestinationAgent } from "../destination/agent";
import {
  listenersText,
  metricsFor,
  reportError,
  setup,
  stopOnSignals,
  withCommonOptions,
  withMetricsOption,
  type CommonOptions,
} from "./common";

/** `sip-teleport listen`: the destination agent, until SIGINT/SIGTERM. */
export function registerListenCommand(program: Command): void {
  withMetricsOption(withCommonOptions(program.command("listen")))
    .description("run the destination agent: answer INVITEs, arm listeners, receive VMs")
    .addHelpText(
      "after",
      `
The agent refuses with a precise status: 403 (not in security.allow / bad digest), 415 (not NRDL),
400 (invalid NRDL), 488 (a VM not defined here), 486 (a VM busy in another dialog).

Examples:
  $ sip-teleport listen --config /etc/sip-teleport/dc2.json --sip-trace
  $ sip-teleport listen --config dc2.json --metrics 127.0.0.1:9464 && curl -s 127.0.0.1:9464/metrics`,
    )
    .action(async (o: CommonOptions & { metrics?: string | boolean }) => {
      try {
        const { cfg, logger } = setup(o);
        const sip = sipOf(cfg, logger, { trace: o.sipTrace });
        const exported = await metricsFor("destination", cfg, o.metrics);
        const host = hostOf(cfg, logger);
        const agent = new DestinationAgent({ config: cfg, sip, host, logger, metrics: exported?.metrics });
        await agent.start();
        process.stdout.write(`listening as ${cfg.sip.aor} on ${listenersText(sip.listeners)}\n`);
        stopOnSignals(async () => {
          await agent.stop();
          await exported?.server.stop();
        });
      } catch (err) {
        reportError(err);
        process.exit(2);
      }
    });
}
