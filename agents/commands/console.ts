import type { Command } from "commander";
import { startConsole } from "../console";
import { hostOf, sipOf } from "../wiring";
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

interface ConsoleCommandOptions extends CommonOptions {
  http?: string;
  metrics?: string | boolean;
}

/** `sip-teleport console`: the source host's web page and API, until SIGINT/SIGTERM. */
export function registerConsoleCommand(program: Command): void {
  withMetricsOption(withCommonOptions(program.command("console")))
    .description("serve the operator console: a page and JSON API to Call, Migrate and Bye, and SIP MESSAGE triggers")
    .option(
      "--http <address:port>",
      "where the page and API listen (default: console.http of the config, 127.0.0.1:8080)",
    )
    .addHelpText(
      "after",
      `
The API requires a bearer token, on loopback too: console.token of the config, or one generated
at start, printed with the page's address (open that URL) and written to STATEDIR/console.token
(mode 0600) for scripts run as the console's user.

Examples:
  $ sip-teleport console --config dc1.json
  $ sip-teleport console --config dc1.json --http 10.10.10.66:8080
  SIP: MESSAGE "migrate exp2 to sip:dc2@10.10.10.67" to this host's AOR runs the plan`,
    )
    .action(async (o: ConsoleCommandOptions) => {
      try {
        const { cfg, logger } = setup(o);
        const sip = sipOf(cfg, logger, { trace: o.sipTrace });
        const host = hostOf(cfg, logger);
        const exported = await metricsFor("console", cfg, o.metrics);
        const metrics = exported?.metrics;
        const running = await startConsole({ config: cfg, sip, host, logger, listen: o.http, metrics });
        await sip.start();
        const where = listenersText(sip.listeners);
        process.stdout.write(`console at ${running.url}#token=${running.token}\nSIP as ${cfg.sip.aor} on ${where}\n`);
        if (running.tokenFile)
          process.stdout.write(
            `API token generated (set console.token to keep one), also in ${running.tokenFile}: ${running.token}\n`,
          );
        stopOnSignals(async () => {
          await running.stop();
          await sip.stop();
          await exported?.server.stop();
        });
      } catch (err) {
        reportError(err);
        process.exit(2);
      }
    });
}
