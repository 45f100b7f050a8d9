/**
 * Metrics scraped after real moves: `sip-teleport listen --metrics` as its own process receives
 * router1 from the console (its metrics in-process) and video from the source agent, after one
 * refused (486) and one empty dialog; both /metrics endpoints are read over HTTP.
 */
import { startConsole, type RunningConsole } from "../../agents/console";
import { serveMetrics, type MetricsServer } from "../../lib/metrics/http";
import { AgentMetrics } from "../../lib/metrics/metrics";
import { runCli, type CliProcess } from "../e2e/cli-process";
import { bootOnSource, configFile, expectAllOn, type Pair } from "../harness";
import { exp2Pair } from "./exp2-pair";

jest.setTimeout(120_000);

let pair: Pair;
let dest: CliProcess;
let consoleRun: RunningConsole;
let consoleMetrics: MetricsServer;

beforeAll(async () => {
  pair = await exp2Pair({ transport: "tcp", destination: false });
  await bootOnSource(pair);
});
afterAll(async () => {
  await consoleRun?.stop();
  await consoleMetrics?.stop();
  dest?.child.kill("SIGTERM");
  await dest?.exited;
  await pair?.close();
});

async function scrape(url: string): Promise<string> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain");
  return res.text();
}

/** The value of one sample, e.g. value(text, 'sip_teleport_dialogs_total{outcome="completed",status="200"'). */
function value(text: string, sample: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(sample) && /[ {},]/.test(l[sample.length] ?? " "));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

test("a destination's and a console's metrics after a refusal, an empty dialog and two real moves", async () => {
  dest = runCli(["listen", "-c", configFile(pair, "dc2"), "--metrics", "127.0.0.1:0"]);
  await dest.waitFor(/listening as/);
  const destUrl = /metrics at (http:\S+)/.exec(dest.output())?.[1] ?? "";
  expect(destUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);

  const policy = { strategy: "sequential", maxParallel: 1, bandwidthMbps: 0, downtimeLimitMs: 300 } as const;
  const full = { ...policy, timeoutS: 120, onError: "abort" } as const;
  // a dialog holds router1 (armed: the gauge shows it) while a second INVITE for it is refused 486
  const held = await pair.dc1.agent.call({ to: pair.dc2.uri, vms: ["router1"], policy: full });
  expect(value(await scrape(destUrl), "sip_teleport_armed_listeners")).toBe(1);
  await expect(pair.dc1.agent.call({ to: pair.dc2.uri, vms: ["router1"], policy: full })).rejects.toMatchObject({
    status: 486,
  });
  await held.bye(); // hung up without migrating: the dialog ends "failed", router1 stays at dc1

  // router1 moves through the console, video through the source agent
  const metrics = new AgentMetrics("console");
  consoleMetrics = await serveMetrics(metrics.registry, "127.0.0.1:0");
  consoleRun = await startConsole({
    config: pair.dc1.cfg,
    sip: pair.dc1.sip,
    host: pair.dc1.host,
    logger: pair.dc1.agent["opts"].logger,
    listen: "127.0.0.1:0",
    metrics,
  });
  await consoleRun.line.dial({ to: pair.dc2.uri, vms: ["router1"], policy: full });
  await consoleRun.line.migrate();
  await consoleRun.line.bye();
  const moved = await pair.dc1.agent.migrate({ to: pair.dc2.uri, vms: ["video"], policy: full });
  expect(moved.outcome).toBe("completed");
  await expectAllOn(pair, "dc2");

  const d = await scrape(destUrl);
  expect(value(d, 'sip_teleport_dialogs_total{outcome="completed",status="200"')).toBe(2);
  expect(value(d, 'sip_teleport_dialogs_total{outcome="failed",status="200"')).toBe(1);
  expect(value(d, 'sip_teleport_dialogs_total{outcome="refused",status="486"')).toBe(1);
  expect(value(d, 'sip_teleport_refusals_total{reason="busy"')).toBe(1);
  expect(value(d, 'sip_teleport_migration_seconds_count{role="destination"}')).toBe(2);
  expect(value(d, 'sip_teleport_downtime_seconds_count{role="destination"}')).toBe(2);
  // two guests of 96 MiB: the bytes QEMU reported for both (at least most of their RAM)
  expect(value(d, 'sip_teleport_migrated_bytes_total{role="destination"}')).toBeGreaterThan(2 * 20 * 2 ** 20);
  expect(value(d, "sip_teleport_armed_listeners")).toBe(0);
  expect(
    value(d, 'sip_teleport_sip_messages_total{direction="received",kind="request",method="INVITE",status=""'),
  ).toBe(4);
  expect(
    value(d, 'sip_teleport_sip_messages_total{direction="sent",kind="response",method="INVITE",status="486"'),
  ).toBe(1);
  expect(d).toContain("sip_teleport_sip_retransmissions_total");

  const c = await scrape(consoleMetrics.url);
  expect(value(c, 'sip_teleport_dialogs_total{outcome="completed",status="200"')).toBe(1);
  expect(value(c, 'sip_teleport_migration_seconds_count{role="console"}')).toBe(1);
  // the console counts every message of its SIP endpoint: the agent's video move shares it here
  expect(value(c, 'sip_teleport_sip_messages_total{direction="sent",kind="request",method="BYE",status=""')).toBe(2);
});
