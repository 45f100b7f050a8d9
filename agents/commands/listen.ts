import type { Command } from "commander";
import { hostOf, sipOf } from "../wiring";
import { DestinationAgent } from "../destination/agent";
import { listenersText, reportError, setup, stopOnSignals, withCommonOptions, type CommonOptions } from "./common";

/** `sip-teleport listen`: the destination agent, until SIGINT/SIGTERM. */
export function registerListenCommand(program: Command): void {
  withCommonOptions(program.command("listen"))
    .description("run the destination agent: answer INVITEs, arm listeners, receive VMs")
    .addHelpText(
      "after",
      `
The agent refuses with a precise status: 403 (not in security.allow / bad digest), 415 (not NRDL),
400 (invalid NRDL), 488 (a VM not defined here), 486 (a VM busy in another dialog).

Example:
  $ sip-teleport listen --config /etc/sip-teleport/dc2.json --sip-trace`,
    )
    .action(async (o: CommonOptions) => {
      try {
        const { cfg, logger } = setup(o);
        const sip = sipOf(cfg, logger, { trace: o.sipTrace });
        const agent = new DestinationAgent({ config: cfg, sip, host: hostOf(cfg, logger), logger });
        await agent.start();
        process.stdout.write(`listening as ${cfg.sip.aor} on ${listenersText(sip.listeners)}\n`);
        stopOnSignals(() => agent.stop());
      } catch (err) {
        reportError(err);
        process.exit(2);
      }
    });
}
