/**
 * bench:sip — how many migration-shaped calls per second our UAS sustains over UDP.
 * sipp plays the source agent (INVITE with an NRDL offer, 200 with the answer, ACK, one
 * INFO status report, BYE) at increasing call rates against a UAS in this process; the
 * highest rate with zero failed calls and this process's peak RSS are printed.
 */
import path from "node:path";
import { createSipBackend, type SipJsBackend } from "../lib/sip";
import { compareBackends } from "./backends";
import { runSipp } from "./sipp";

const SCENARIO = path.resolve(__dirname, "..", "..", "test", "fixtures", "sipp", "nrdl-uac.xml");
const RATES = [25, 50, 75, 100, 125, 150, 200, 250, 300, 400, 500, 700, 1000];
/** Seconds of traffic per rate step. */
const STEP_SECONDS = 4;
const ANSWER =
  '<nrdl xmlns="urn:sip-teleport:nrdl:1" version="1"><answer><vm name="router1" accepted="true"/></answer></nrdl>';

function answerEverything(uas: SipJsBackend): void {
  uas.setHandlers({
    onInvite: (_req, res) => {
      const { dialog } = res.accept({ contentType: "application/nrdl+xml", content: ANSWER });
      dialog.onInfo((_r, reply) => reply.send(200));
      dialog.onBye((_r, reply) => reply.send(200));
    },
  });
}

async function main(): Promise<void> {
  const uas = createSipBackend({
    aor: "sip:dc2@127.0.0.1",
    listen: [{ transport: "udp", host: "127.0.0.1", port: 0 }],
  });
  await uas.start();
  answerEverything(uas);
  const port = uas.listeners[0].port;
  const sippArgs = (rate: number, calls: number): string[] => [
    `127.0.0.1:${port}`,
    "-sf",
    SCENARIO,
    "-s",
    "dc2",
    "-t",
    "u1",
    "-i",
    "127.0.0.1",
    "-r",
    String(rate),
    "-m",
    String(calls),
    "-recv_timeout",
    "5000",
    "-timeout",
    String(STEP_SECONDS * 4 + 10),
  ];
  // Warm up V8 (JIT, sip.js grammar) so the first step does not pay for it.
  await runSipp(sippArgs(20, 40));
  let best = 0;
  console.log("rate/s  calls  completed  failed  sipp-retransmissions  rss-MiB");
  try {
    for (const rate of RATES) {
      const calls = rate * STEP_SECONDS;
      const r = await runSipp(sippArgs(rate, calls), (STEP_SECONDS * 4 + 20) * 1000);
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
  await compareBackends("uas", [50, 100, 200, 300, 400, 500], STEP_SECONDS);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
