/**
 * bench:load — a real DestinationAgent (admission, NRDL validation, journal, dialog timers)
 * under sipp load with the full NRDL dialog (INVITE/200/ACK/INFO/BYE over UDP), its VMs armed
 * by the LoadDriver, a benchmark driver that arms nothing, so the figures are the signalling's
 * alone. Steps of increasing call rate, `--seconds` each (60 by default): the highest rate with
 * zero failed calls, p50/p99 setup time INVITE -> 200 (sipp's per-call response times), then the
 * agent's heap (after a full GC, once the SIP caches of the last 32 s expired) after 1,000 and
 * after 10,000 dialogs.
 * The climb runs twice in the same process, side by side: sip.js' grammar as shipped (rebuilt for
 * every parse) and the grammar built once (lib/sip/grammar-cache.ts, what the agent uses); the
 * memory figures are the cached grammar's.
 * Then the drachtio column: the same steps against the agent on each SIP backend (bench/backends.ts).
 * Usage: see USAGE (`npm run bench:load -- --help`).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import v8 from "node:v8";
import vm from "node:vm";
import { DestinationAgent } from "../agents/destination/agent";
import { sipOf } from "../agents/wiring";
import { createBenchmarkDriver } from "../lib/hypervisor/drivers";
import { Host } from "../lib/hypervisor/host";
import type { LoadDriver } from "../lib/hypervisor/load";
import { silentLogger } from "../lib/log/logger";
import { useCachedSipGrammar, useSipJsGrammar } from "../lib/sip/grammar-cache";
import { benchDestinationConfig, compareBackends } from "./backends";
import { benchFlags, positive, rateList } from "./lib/flags";
import { percentile, runNrdlLoad } from "./sipp";

const USAGE = `npm run bench:load -- [--seconds N] [--rates 50,100,...] [--dialogs N] [--grammar both|cached]
  The destination agent (admission, NRDL, journal, timers; VMs armed by a driver that arms
  nothing) under sipp's NRDL dialog (INVITE/200/ACK/INFO/BYE over UDP) at increasing rates:
    --seconds N     seconds per rate step (default 60, the issue's figure; or LOAD_STEP_SECONDS)
    --rates LIST    call rates to climb, stopping at the first with a failed call
                    (default 50,100,200,300,400,600,800)
    --dialogs N     dialogs for the memory figure (heap after 1,000, or N/2 when smaller, and
                    after N; default 10000)
    --grammar G     both (sip.js as shipped, then the cached grammar; default) or cached only
  Prints per step: calls, completed, failed, p50/p99/max INVITE->200 (ms), listeners left armed,
  agent CPU per dialog; then the highest zero-failure rate per grammar, the heap figures, and
  sip.js vs drachtio side by side (the same steps on each backend; skipped without the binary).
  Each step waits for the previous one's dialogs to end; the memory runs wait 40 s each.
  A quick check that it works (a few minutes): npm run bench:load -- --seconds 10 --rates 50,100 --dialogs 500`;

const flags = benchFlags(USAGE, ["seconds", "rates", "dialogs", "grammar"]);
const SECONDS = positive(flags.seconds ?? process.env.LOAD_STEP_SECONDS ?? "60", "seconds");
const RATES = rateList(flags.rates ?? "50,100,200,300,400,600,800", "rates");
const DIALOGS = Number(flags.dialogs ?? "10000");
if (!Number.isInteger(DIALOGS) || DIALOGS < 2) {
  console.error(`--dialogs ${flags.dialogs}: expected a whole number of at least 2`);
  process.exit(2);
}
/** The first memory point: what the heap holds after this many dialogs is the baseline for the growth. */
const BASELINE = Math.min(1000, Math.floor(DIALOGS / 2));
if (flags.grammar !== undefined && !["both", "cached"].includes(flags.grammar)) {
  console.error(`--grammar ${flags.grammar}: expected both or cached`);
  process.exit(2);
}
const GRAMMARS = flags.grammar === "cached" ? ["cached"] : ["sip.js", "cached"];

/** A full GC without --expose-gc on the command line (so `npm run bench load` works too). */
function collector(): () => void {
  v8.setFlagsFromString("--expose-gc");
  return vm.runInNewContext("gc") as () => void;
}

function heapMiB(): number {
  const gc = collector();
  gc();
  gc();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sip-teleport-load-"));
  const maxCalls = Math.max(DIALOGS, ...RATES.map((r) => r * SECONDS));
  const config = benchDestinationConfig(dir, "load-dc2");
  const driver = createBenchmarkDriver("load", { count: maxCalls }) as LoadDriver;
  const sip = sipOf(config, silentLogger);
  const agent = new DestinationAgent({ config, sip, host: new Host([driver]), logger: silentLogger });
  await agent.start();
  const port = sip.listeners[0].port;
  // sipp numbers calls from 1 in every run (VM router<n>): wait until the last run's leftovers are gone
  const settle = async (): Promise<void> => {
    const deadline = Date.now() + 1000 * (config.timers.idleTimeoutS + 40);
    while (driver.armedCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
  };
  const sipp = (rate: number, calls: number) => runNrdlLoad(port, rate, calls);
  try {
    console.log(
      `destination agent + LoadDriver (arms nothing), full NRDL dialog over UDP, ${SECONDS} s per ` +
        `step, sipp on the same ${os.cpus().length}-core machine`,
    );
    console.log("grammar  rate/s   calls  completed  failed  p50-ms  p99-ms  max-ms  armed-left  agent-cpu-ms/dialog");
    const bestOf: Record<string, number> = {};
    for (const grammar of GRAMMARS) {
      if (grammar === "cached") {
        const state = useCachedSipGrammar();
        if (!state.cached) throw new Error(state.reason);
      } else useSipJsGrammar();
      await settle();
      await sipp(20, 40); // warm up V8 and this grammar
      bestOf[grammar] = 0;
      for (const rate of RATES) {
        const calls = rate * SECONDS;
        await settle();
        const cpu0 = process.cpuUsage();
        const r = await sipp(rate, calls);
        // the agent's own CPU per completed dialog: what other load on the machine does not change much
        const cpu = process.cpuUsage(cpu0);
        const cpuMs = (cpu.user + cpu.system) / 1000 / Math.max(1, r.successful);
        const times = [...r.responseTimesMs].sort((a, b) => a - b);
        const row = [
          grammar,
          rate,
          calls,
          r.successful,
          r.failed,
          percentile(times, 50),
          percentile(times, 99),
          times[times.length - 1] ?? NaN,
          driver.armedCount,
          cpuMs.toFixed(2),
        ];
        const widths = [7, 6, 7, 9, 6, 6, 6, 6, 10, 14];
        console.log(
          row.map((v, i) => (i === 0 ? String(v).padEnd(widths[i]) : String(v).padStart(widths[i]))).join("  "),
        );
        if (r.failed !== 0 || r.successful !== calls) {
          if (r.successful === 0) console.log(r.output.slice(-1500)); // nothing works: show sipp's reason
          break;
        }
        bestOf[grammar] = rate;
      }
    }
    for (const [grammar, rate] of Object.entries(bestOf))
      console.log(`highest call rate with zero failed calls, ${grammar} grammar: ${rate} calls/s`);
    if (bestOf["sip.js"]) console.log(`ratio cached/sip.js: ${(bestOf.cached / bestOf["sip.js"]).toFixed(2)}`);
    const best = bestOf.cached;

    const rate = Math.min(Math.max(best, 50), 400);
    const batch = async (calls: number): Promise<number> => {
      await settle();
      const r = await sipp(rate, calls);
      if (r.failed || r.successful !== calls)
        console.log(`memory run at ${rate}/s: ${r.successful} of ${calls} completed, ${r.failed} failed`);
      // what stays: after the dialogs ended and the 64*T1 caches of transactions and answers expired
      await settle();
      await new Promise((res) => setTimeout(res, 40_000));
      return heapMiB();
    };
    const after1k = await batch(BASELINE);
    const after10k = await batch(DIALOGS - BASELINE);
    console.log(
      `heap after ${BASELINE.toLocaleString("en")} dialogs: ${after1k.toFixed(1)} MiB; after ` +
        `${DIALOGS.toLocaleString("en")}: ${after10k.toFixed(1)} MiB ` +
        `(growth ${(after10k - after1k).toFixed(1)} MiB, ` +
        `${(((after10k - after1k) * 2 ** 20) / (DIALOGS - BASELINE)).toFixed(0)} bytes/dialog)`,
    );
    await settle();
    console.log(`listeners left armed after the agent's timers ran: ${driver.armedCount}`);
  } finally {
    await agent.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // the drachtio column: the same steps against the destination agent on each backend (bench/backends.ts)
  await compareBackends("agent", RATES, SECONDS);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
