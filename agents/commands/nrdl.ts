import { readFile } from "node:fs/promises";
import { Argument, type Command } from "commander";
import {
  EXAMPLES,
  buildNrdl,
  exampleOffer,
  formatViolation,
  parseNrdl,
  type ExampleName,
  type NrdlDocument,
} from "../../nrdl";
import type { CliIo } from "../io";

/** Exit status of `nrdl validate` for an invalid document (1 stays "could not run"). */
export const EXIT_INVALID = 2;

/** `sip-teleport nrdl validate|example`. */
export function registerNrdlCommands(program: Command, io: CliIo): void {
  const nrdl = program
    .command("nrdl")
    .description(
      "work with NRDL documents, the application/nrdl+xml bodies of every sip-teleport dialog (spec: nrdl/SPEC.md)",
    )
    .addHelpText(
      "after",
      `
Examples:
  $ sip-teleport nrdl validate offer.xml         check a document; exit 0 and a summary, ` +
        `or exit 2 and one line per violation
  $ sip-teleport nrdl validate - < offer.xml     the same, reading standard input
  $ sip-teleport nrdl example exp3               print the offer for experiment 3 ` +
        `(firewall, router-switch, storage, web)`,
    );

  nrdl
    .command("validate")
    .description("check an NRDL document (FILE, or - for standard input)")
    .argument("<file>", "path of the document, or - to read standard input")
    .addHelpText("after", "\nExample:\n  $ sip-teleport nrdl example exp2 | sip-teleport nrdl validate -")
    .action(async (file: string) => {
      let text: string;
      try {
        text = file === "-" ? await io.readStdin() : await readFile(file, "utf8");
      } catch (err) {
        // Not `instanceof Error`: fs errors can come from another realm (jest's sandbox).
        const reason = typeof err === "object" && err !== null && "message" in err ? String(err.message) : String(err);
        io.err(`sip-teleport: cannot read ${file}: ${reason}\n`);
        io.setExitCode(1);
        return;
      }
      const result = parseNrdl(text);
      if (result.ok) io.out(`${summary(result.doc)}\n`);
      else {
        io.err(result.violations.map((v) => `${formatViolation(v)}\n`).join(""));
        io.setExitCode(EXIT_INVALID);
      }
    });

  nrdl
    .command("example")
    .description("print a valid NRDL offer for one of the thesis experiments")
    .addArgument(
      new Argument(
        "<name>",
        "exp1: router1, router2; exp2: router1, video; exp3: firewall, router-switch, storage, web",
      ).choices(EXAMPLES),
    )
    .addHelpText("after", "\nExample:\n  $ sip-teleport nrdl example exp2 > offer.xml")
    .action((name: ExampleName) => io.out(buildNrdl(exampleOffer(name))));
}

/** One line saying what a valid document holds. */
export function summary(doc: NrdlDocument): string {
  const head = `valid NRDL v${doc.version} ${doc.body.kind} ${doc.id}`;
  const count = (n: number, what: string): string => `${n} ${what}${n === 1 ? "" : "s"}`;
  const b = doc.body;
  switch (b.kind) {
    case "offer":
      return (
        `${head}: ${count(b.vms.length, "VM")} ` +
        `(${b.vms.map((v) => v.name).join(", ")}), strategy ` +
        `${b.policy.strategy}`
      );
    case "answer":
      return (
        `${head}: ${b.armed.length} armed (${b.armed.map((a) => a.vm).join(", ")}), ` +
        `${b.rejected.length} rejected (${b.rejected.map((r) => r.vm).join(", ")})`
      );
    case "status":
      return `${head}: ${b.statuses.map((s) => `${s.vm} ${s.state}`).join(", ")}`;
    case "report":
      return `${head}: outcome ${b.outcome}, ${b.results.map((r) => `${r.vm} ${r.state}`).join(", ")}`;
    case "preview": {
      const arm = b.accepted.map((a) => a.vm).join(", ");
      const refuse = b.rejected.map((r) => r.vm).join(", ");
      return `${head}: would arm ${b.accepted.length} (${arm}), would refuse ${b.rejected.length} (${refuse})`;
    }
    case "capacity":
      return (
        `${head}: ${b.host} ${b.memoryFreeMib} MiB free, ${b.diskFreeMib} MiB disk, ${b.portsFree} ports, ` +
        `hypervisors ${b.hypervisors || "none"}`
      );
    case "recover":
      return `${head}: resume the post-copy migration of ${b.vm}`;
    case "recovery":
      return `${head}: ${b.vm} may resume to ${b.uri}`;
    case "switchover":
      return `${head}: the group is stopped at the source, its last pages follow`;
    case "abort":
      return `${head}: call the group off (${b.reason})`;
    case "decision":
      return `${head}: the destination decided ${b.outcome}${b.reason ? ` (${b.reason})` : ""}`;
    case "decision-query":
      return `${head}: what did the destination decide for this group?`;
  }
}
