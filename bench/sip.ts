/**
 * bench:sip — how many migration-shaped calls per second our UAS sustains over UDP.
 * sipp plays the source agent (INVITE with an NRDL offer, 200 with the answer, ACK, one
 * INFO status report, BYE) at increasing call rates against a UAS in this process; the
 * highest rate with zero failed calls and this process's peak RSS are printed, then the same
 * load against a bare UAS on each SIP backend (sip.js, drachtio) side by side.
 */
import { createSipBackend } from "../lib/sip";
import { answerEverything, compareBackends } from "./backends";
import { benchFlags, positive, rateList } from "./lib/flags";
import { runNrdlLoad } from "./sipp";

const USAGE = `npm run bench:sip -- [--seconds N] [--rates 25,50,...] [--backend-rates 50,100,...]
  sipp (the NRDL dialog INVITE/200/ACK/INFO/BYE over UDP) against a bare UAS (answers everything)
  at increasing call rates, N seconds a step (default 4), stopping at the first step with a failed
  call; then the same load on each SIP backend, sip.js and drachtio, side by side (--backend-rates,
  default 50,100,200,300,400,500; skipped without a drachtio-server binary).
  Prints per step: calls, completed, failed, sipp retransmissions, RSS; then the highest rate with
  zero failed calls, and per backend: that rate, p50/p99 INVITE->200, agent and server RSS.
  A quick check that it works: npm run bench:sip -- --seconds 2 --rates 50,100 --backend-rates 50,100`;

const flags = benchFlags(USAGE, ["seconds", "rates", "backend-rates"]);
const STEP_SECONDS = positive(flags.seconds ?? "4", "seconds");
const RATES = rateList(flags.rates ?? "25,50,75,100,125,150,200,250,300,400,500,700,1000", "rates");
const BACKEND_RATES = rateList(flags["backend-rates"] ?? "50,100,200,300,400,500", "backend-rates");

async function main(): Promise<void> {
  const uas = createSipBackend({
    aor: "sip:dc2@127.0.0.1",
    listen: [{ transport: "udp", host: "127.0.0.1", port: 0 }],
  });
  await uas.start();
  answerEverything(uas);
  const port = uas.listeners[0].port;
  // Warm up V8 (JIT, sip.js grammar) so the first step does not pay for it.
  await runNrdlLoad(port, 20, 40);
  let best = 0;
  console.log("rate/s  calls  completed  failed  sipp-retransmissions  rss-MiB");
  try {
    for (const rate of RATES) {
      const calls = rate * STEP_SECONDS;
      const r = await runNrdlLoad(port, rate, calls);
      const rss = (process.memoryUsage().rss / 2 ** 20).toFixed(0);
      console.log(
        `${String(rate).padStart(6)}  ${String(calls).padStart(5)}  ` +
          `${String(r.successful).padStart(9)}  ${String(r.failed).padStart(6)}  ` +
          `${String(r.retransmissions).padStart(20)}  ${rss.padStart(7)}`,
      );
      if (r.failed !== 0 || r.successful !== calls) break;
      best = rate;
    }
  } finally {
    await uas.stop();
  }
  const peakMiB = (process.resourceUsage().maxRSS / 1024).toFixed(0);
  console.log(
    `highest call rate with zero failed calls: ${best} calls/s (INVITE/200/ACK/INFO/BYE, UDP, ` +
      `sipp on the same 2-core machine)`,
  );
  console.log(`agent peak RSS: ${peakMiB} MiB`);
  // the drachtio column: the same load on a bare UAS of each backend (bench/backends.ts)
  await compareBackends("uas", BACKEND_RATES, STEP_SECONDS);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
