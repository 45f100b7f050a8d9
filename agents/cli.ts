#!/usr/bin/env node
/**
 * sip-teleport's command line. Each command family lives in agents/commands/<family>.ts
 * and registers itself here.
 */
import { Command } from "commander";
import { packageVersion } from "../lib/version";
import { registerConfigCommands } from "./commands/config";
import { registerConsoleCommand } from "./commands/console";
import { registerDemoCommand } from "./commands/demo";
import { registerDestinationsCommand } from "./commands/destinations";
import { registerEvacuateCommand } from "./commands/evacuate";
import { registerListenCommand } from "./commands/listen";
import { registerMigrateCommand } from "./commands/migrate";
import { registerNrdlCommands } from "./commands/nrdl";
import { registerVmCommands } from "./commands/vm";
import { processIo, type CliIo } from "./io";

export function buildProgram(io: CliIo = processIo): Command {
  const program = new Command();
  program
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .name("sip-teleport")
    // One paragraph per line: commander wraps each at the terminal's width, so no hand-made breaks.
    .description(
      "Live-migrate groups of virtual machines between data centers under SIP signalling.\n\n" +
        "A source agent sends an INVITE carrying an NRDL offer; the destination arms a migration listener " +
        "per VM and answers 200 OK; the source migrates, reports progress by INFO, and ends with BYE.",
    )
    .version(packageVersion())
    .showHelpAfterError("(run with --help for usage)")
    .addHelpText(
      "after",
      `
Examples:
  $ sip-teleport nrdl example exp2 > offer.xml     write the thesis' experiment 2 offer
  $ sip-teleport nrdl validate offer.xml           check an NRDL document
  $ sip-teleport nrdl example exp2 | sip-teleport nrdl validate -`,
    );
  registerDemoCommand(program);
  registerListenCommand(program);
  registerMigrateCommand(program);
  registerEvacuateCommand(program);
  registerDestinationsCommand(program);
  registerVmCommands(program);
  registerConfigCommands(program);
  registerConsoleCommand(program);
  registerNrdlCommands(program, io);
  return program;
}

if (require.main === module) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      process.stderr.write(`sip-teleport: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    });
}
