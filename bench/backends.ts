/**
 * The drachtio column of bench:sip and bench:load: the same sipp load (the NRDL dialog
 * INVITE/200/ACK/INFO/BYE over UDP) against a destination on each SIP backend, one after the
 * other in one run, printed side by side: highest zero-failure rate, p50/p99 INVITE -> 200 at
 * that rate, the agent's RSS and (drachtio) the server's peak RSS.
 * Kept apart from bench/sip.ts and bench/load.ts so they only call `compareBackends`.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DestinationAgent } from "../agents/destination/agent";
import { sipConfigOf, sipOf } from "../agents/wiring";
import { parseConfig } from "../lib/config/load";
import { createBenchmarkDriver } from "../lib/hypervisor/drivers";
import { Host } from "../lib/hypervisor/host";
import type { LoadDriver } from "../lib/hypervisor/load";
import { silentLogger } from "../lib/log/logger";
import type { SipBackend } from "../lib/sip";
import { DrachtioWithOwnServer } from "../lib/sip/drachtio/own-server";
import { drachtioBinary, drachtioMissing } from "../lib/sip/drachtio/server-process";
import type { HostConfig } from "../lib/config/schema";
import { percentile, runNrdlLoad } from "./sipp";

const ANSWER =
  '<nrdl xmlns="urn:sip-teleport:nrdl:1" version="1"><answer><vm name="router1" accepted="true"/></answer></nrdl>';

type Kind = "sipjs" | "drachtio";

interface Column {
  kind: Kind;
  best: number;
  p50: number;
  p99: number;
  agentRssMiB: number;
  serverRssMiB?: number;
}

/** Peak RSS of a process (VmHWM), MiB. */
function peakRssMiB(pid: number): number | undefined {
  try {
    const m = fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmHWM:\s+(\d+) kB/m);
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A destination on an ephemeral UDP port, state in `dir`, for sipp calling from one address: the
 * per-address limits would measure themselves, not the agent. Dialogs sipp gives up on end by
 * the short idle timer, so steps start clean.
 */
export function benchDestinationConfig(dir: string, host: string): HostConfig {
  const low = 30000 + Math.floor(Math.random() * 20000);
  return parseConfig({
    host,
    sip: { aor: "sip:dc2@127.0.0.1", listen: [{ transport: "udp", address: "127.0.0.1", port: 0 }] },
    stateDir: path.join(dir, "state"),
    runDir: path.join(dir, "run"),
    migration: { address: "127.0.0.1", ports: `${low}-${low + 255}` },
    limits: { invitesPerSecond: 1e6, dialogsPerCaller: 1e6 },
    timers: { idleTimeoutS: 10 },
  });
}

/** A bare UAS: answers every INVITE with an NRDL answer, every INFO and BYE with 200 (bench:sip). */
export function answerEverything(uas: SipBackend): void {
  uas.setHandlers({
    onInvite: (_req, res) => {
      const { dialog } = res.accept({ contentType: "application/nrdl+xml", content: ANSWER });
      dialog.onInfo((_r, reply) => reply.send(200));
      dialog.onBye((_r, reply) => reply.send(200));
    },
  });
}

/** The destination under test: a bare UAS answering everything (bench:sip) or the real agent (bench:load). */
async function destination(
  kind: Kind,
  what: "uas" | "agent",
  maxCalls: number,
): Promise<{ port: number; serverPid?: number; stop(): Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-bench-backends-"));
  const config = benchDestinationConfig(dir, "bench-dc2");
  const sip: SipBackend & { listeners: Array<{ port: number }> } =
    kind === "drachtio" ? new DrachtioWithOwnServer(sipConfigOf(config, silentLogger)) : sipOf(config, silentLogger);
  let agent: DestinationAgent | undefined;
  if (what === "agent") {
    const driver = createBenchmarkDriver("load", { count: maxCalls }) as LoadDriver;
    agent = new DestinationAgent({ config, sip, host: new Host([driver]), logger: silentLogger });
    await agent.start();
  } else {
    await sip.start();
    answerEverything(sip);
  }
  const serverPid = sip instanceof DrachtioWithOwnServer ? sip.ownServer?.pid : undefined;
  return {
    port: sip.listeners[0].port,
    serverPid,
    stop: async () => {
      if (agent) await agent.stop();
      else await sip.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function column(kind: Kind, what: "uas" | "agent", rates: number[], seconds: number): Promise<Column> {
  const maxCalls = Math.max(...rates) * seconds * 2;
  const d = await destination(kind, what, maxCalls);
  let best = 0;
  let times: number[] = [];
  let serverRssMiB: number | undefined;
  try {
    await runNrdlLoad(d.port, 20, 40); // warm-up
    for (const rate of rates) {
      const calls = rate * seconds;
      const r = await runNrdlLoad(d.port, rate, calls);
      console.log(
        `  ${kind.padEnd(8)} ${String(rate).padStart(5)}/s  ${r.successful}/${calls} completed, ${r.failed} failed`,
      );
      if (r.failed !== 0 || r.successful !== calls) break;
      best = rate;
      times = [...r.responseTimesMs].sort((a, b) => a - b);
    }
  } finally {
    serverRssMiB = d.serverPid ? peakRssMiB(d.serverPid) : undefined;
    await d.stop();
  }
  return {
    kind,
    best,
    p50: percentile(times, 50),
    p99: percentile(times, 99),
    agentRssMiB: process.memoryUsage().rss / 2 ** 20,
    serverRssMiB,
  };
}

/** Runs the same load on both backends and prints them side by side. */
export async function compareBackends(what: "uas" | "agent", rates: number[], seconds: number): Promise<void> {
  if (!drachtioBinary()) {
    console.log(`drachtio column skipped: ${drachtioMissing()}`);
    return;
  }
  console.log(`\nsip.js vs drachtio, same sipp load against the destination (${what}), ${seconds} s per step:`);
  const cols: Column[] = [];
  for (const kind of ["sipjs", "drachtio"] as const) cols.push(await column(kind, what, rates, seconds));
  const row = (label: string, f: (c: Column) => string): string =>
    `${label.padEnd(34)}${cols.map((c) => f(c).padStart(12)).join("")}`;
  console.log(row("", (c) => c.kind));
  console.log(row("highest zero-failure rate (calls/s)", (c) => String(c.best)));
  console.log(row("INVITE->200 p50 at that rate (ms)", (c) => String(c.p50)));
  console.log(row("INVITE->200 p99 at that rate (ms)", (c) => String(c.p99)));
  console.log(row("agent RSS after the run (MiB)", (c) => c.agentRssMiB.toFixed(0)));
  console.log(row("drachtio-server peak RSS (MiB)", (c) => (c.serverRssMiB ? c.serverRssMiB.toFixed(0) : "-")));
  console.log(
    "(one process runs both agents one after the other: the drachtio agent's RSS includes what the " +
      "sip.js run left; load average: " +
      os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(" ") +
      ")",
  );
}
