import type { Command } from "commander";

/** `sip-teleport nrdl ...`: placeholder until the NRDL module lands (validate, example). */
export function registerNrdlCommands(program: Command): void {
  program.command("nrdl").description("work with NRDL documents (validate, example)");
}
