import type { Command } from "commander";
import { TeleportError } from "../../lib/errors";
import { askCapacity, renderDestinations } from "../source/capacity-query";
import { sipOf } from "../wiring";
import { reportError, setup, withCommonOptions, type CommonOptions } from "./common";

interface DestinationsOptions extends CommonOptions {
  to: string[];
  json?: boolean;
}

/** `sip-teleport destinations`: ask every configured destination what it can receive now. */
export function registerDestinationsCommand(program: Command): void {
  withCommonOptions(program.command("destinations"))
    .description("ask the configured destinations (console.destinations) what they can receive now")
    .option("--to <sip-uri>", "ask this destination too (repeatable)", (v: string, acc: string[]) => [...acc, v], [])
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      `
Each destination answers an OPTIONS (Accept: application/nrdl+xml) with its free memory (after its
reserve), free disk, free migration ports, the VMs it could receive, its hypervisors and NRDL
versions, under the same access control as an INVITE. Exit 0 when every destination answered,
1 when some did not.

Examples:
  $ sip-teleport destinations -c dc1.json
  $ sip-teleport destinations --to sip:dc2@10.10.10.67 --to sip:dc3@10.10.10.68 --json`,
    )
    .action(async (o: DestinationsOptions) => {
      try {
        const { cfg, logger } = setup(o);
        const uris = [...new Set([...cfg.console.destinations, ...o.to])];
        if (uris.length === 0)
          throw new TeleportError(400, "no destinations", [
            `${o.config ?? "the default configuration"} has no console.destinations; give --to URI`,
          ]);
        const sip = sipOf(cfg, logger, { ephemeral: true, trace: o.sipTrace });
        await sip.start();
        try {
          const answers = await Promise.all(uris.map((uri) => askCapacity(sip, uri)));
          process.stdout.write(o.json ? JSON.stringify(answers, null, 2) + "\n" : renderDestinations(answers));
          process.exitCode = answers.every((a) => a.capacity) ? 0 : 1;
        } finally {
          await sip.stop();
        }
      } catch (err) {
        reportError(err);
        process.exitCode = 2;
      }
    });
}
