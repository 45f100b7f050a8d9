import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { TeleportError } from "../../lib/errors";
import { parseNrdlOrThrow } from "../../nrdl";
import type { Offer } from "../../nrdl/types";
import { SourceAgent } from "../source/agent";
import { Evacuation } from "../source/evacuate";
import { EvacuationDisplay } from "../source/evacuate-display";
import { hostOf, sipOf } from "../wiring";
import { permittedDestinations, reportError, setup, withCommonOptions, type CommonOptions } from "./common";
import { EXIT } from "./migrate";
import {
  policyFrom,
  withPolicyOptions,
  withReductionOptions,
  type PolicyOptions,
  type ReductionOptions,
} from "./policy-options";

interface EvacuateOptions extends CommonOptions, PolicyOptions, ReductionOptions {
  to?: string[];
  plan?: string[];
  proxy?: string;
  json?: boolean;
  allowUnlistedDestination?: boolean;
}

/** A repeatable option (no default: commander would print "(default: [])"). */
const repeat = (v: string, acc: string[] | undefined) => [...(acc ?? []), v];

export function registerEvacuateCommand(program: Command): void {
  const cmd = withCommonOptions(program.command("evacuate"))
    .description("move every VM running on this host to one or more destinations (host maintenance)")
    .option("--to <sip-uri>", "a destination agent (repeatable; default: console.destinations)", repeat)
    .option("--plan <file>", "an NRDL offer whose depends-on ties VMs together (repeatable)", repeat)
    .option("--proxy <sip-uri>", "send every request through this outbound proxy (e.g. Kamailio)");
  withReductionOptions(withPolicyOptions(cmd))
    .option("--json", "JSON lines (the last one the whole report) instead of text")
    .option(
      "--allow-unlisted-destination",
      "send to --to targets that security.destinations does not list (this run only)",
    )
    .addHelpText(
      "after",
      `
How: every destination is asked what it can receive (OPTIONS, as \`sip-teleport destinations\`).
VMs tied by depends-on in a --plan form a group that goes to one destination; the largest group
goes first, each to the destination with the most free memory left (ties: the order of --to).
Each destination gets one dialog at a time, all destinations at once, each dialog run under the
plan options below like \`migrate\`. Before each INVITE a dry run asks the destination what it
would refuse; refused VMs, and everything of a destination that refuses the INVITE or fails,
are offered to the next destination that can take them. A VM either moved or still runs here.
--compress and --dedup apply to every dialog as in \`migrate\` (see \`migrate --help\`); the report
names the reductions each moved VM's stream had.

Where VMs may go: each --to must match security.destinations (empty: loopback only), unless
--allow-unlisted-destination is given.

Exit status: 0 every running VM moved, 1 some stayed here, 2 invalid input, 3 none moved.

Examples:
  $ sip-teleport evacuate --to sip:dc2@10.10.10.67 --to sip:dc3@10.10.10.68
  $ sip-teleport nrdl example exp3 > exp3.xml
  $ sip-teleport evacuate -c dc1.json --plan exp3.xml --strategy parallel --to sip:dc2@10.10.10.67 --json`,
    )
    .action(async (o: EvacuateOptions) => {
      process.exitCode = await runEvacuate(o);
    });
}

function readPlan(file: string): Offer {
  const doc = parseNrdlOrThrow(readFileSync(file, "utf8"));
  if (doc.body.kind !== "offer")
    throw new TeleportError(400, "invalid plan", [`${file} holds an <${doc.body.kind}>, not an <offer>`]);
  return doc.body;
}

async function runEvacuate(o: EvacuateOptions): Promise<number> {
  try {
    const { cfg, logger } = setup(o);
    const to = o.to ?? cfg.console.destinations;
    if (to.length === 0)
      throw new TeleportError(400, "no destinations", [
        "give --to URI (repeatable), or list them in console.destinations of the config",
      ]);
    const destinations = permittedDestinations(cfg, to, o.allowUnlistedDestination, logger);
    const policy = policyFrom(o, cfg.defaults);
    const links = (o.plan ?? []).map(readPlan);
    const sip = sipOf(cfg, logger, { ephemeral: true, outboundProxy: o.proxy, trace: o.sipTrace });
    const host = hostOf(cfg, logger);
    const agent = new SourceAgent({
      sip,
      host,
      hostName: cfg.host,
      logger,
      answerTimeoutS: cfg.timers.answerTimeoutS,
      stateDir: cfg.stateDir,
      // every dialog's offer: what the options say, else the config's defaults
      compress: o.compress ?? cfg.defaults.compress,
      dedup: o.dedup ?? cfg.defaults.dedup,
      dedupIndexPages: cfg.migration.dedupIndexPages,
      postcopyRecoveryS: cfg.timers.postcopyRecoveryS,
      redirectAllowed: (target) => destinations.check(target),
      migrationNetworks: (target) => destinations.migrationNetworks(target),
    });
    const display = new EvacuationDisplay(!!o.json);
    const ac = new AbortController();
    const onSigint = () => {
      process.stderr.write("\nsip-teleport: interrupted; cancelling (VMs not yet moved stay here)\n");
      ac.abort();
    };
    process.once("SIGINT", onSigint);
    await agent.recover();
    await sip.start();
    try {
      const evacuation = new Evacuation({ agent, sip, host, hostName: cfg.host, logger });
      const report = await evacuation.run({ destinations: to, policy, links, signal: ac.signal }, display);
      display.done(report);
      return { completed: EXIT.moved, partial: EXIT.notAllMoved, failed: EXIT.refused }[report.outcome];
    } finally {
      process.removeListener("SIGINT", onSigint);
      await sip.stop();
    }
  } catch (err) {
    reportError(err);
    return EXIT.invalid;
  }
}
