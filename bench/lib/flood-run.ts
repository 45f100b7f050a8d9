/**
 * A real exp2 move (router1, video: QEMU guests) from dc1 to a destination that is flooded at the
 * same time: a stranger's INVITEs (sipp, not in the allowlist), INVITEs with wrong digest
 * credentials (sipp), garbage UDP and idle TCP connections, each from its own loopback address
 * (127.0.0.2-127.0.0.29; the legitimate source is 127.0.0.1). While it runs, sipp opens second,
 * legitimate dialogs (probe VMs of a driver that arms nothing) from 127.0.0.1 and times
 * INVITE->200. The destination is its own process (bench/lib/flood-destination.ts), so its RSS
 * is its own. Used by bench:flood (full rates) and the npm test case (small rates, short).
 */
import { spawn, type ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import readline from "node:readline";
import os from "node:os";
import { readJournal } from "../../agents/destination/journal";
import { SourceAgent, type MigrateSummary } from "../../agents/source/agent";
import { hostOf, sipOf } from "../../agents/wiring";
import { parseConfig } from "../../lib/config/load";
import type { HostConfig } from "../../lib/config/schema";
import { ensureGuest, guestVm } from "../../lib/guest/guest";
import { livePid, terminateRunDirs } from "../../lib/hypervisor/pidfile";
import { silentLogger } from "../../lib/log/logger";
import { freePortInRange } from "../../lib/net/ports";
import { repoRoot } from "../../lib/version";
import { runSipp, type SippResult } from "../sipp";

const ROOT = repoRoot(); // from dist/bench/lib (the bench) and bench/lib (jest) alike
const FIXTURES = path.join(ROOT, "test", "fixtures", "sipp");
const DESTINATION = path.join(ROOT, "dist", "bench", "lib", "flood-destination.js");
const PASSWORD = "flood-bench-digest-password";
const VMS = [
  { name: "router1", role: "router" as const },
  { name: "video", role: "server" as const },
];
const NAMES = VMS.map((v) => v.name);
const IDLE_TIMEOUT_S = 5;
const POLICY = {
  strategy: "sequential" as const,
  maxParallel: 1,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 120,
  onError: "abort" as const,
};

export interface FloodRates {
  /** How long the flooders run, seconds (sipp: -m rate*seconds, then it stops by itself). */
  seconds: number;
  strangerPerS: number;
  wrongDigestPerS: number;
  garbagePerS: number;
  idleConnections: number;
  /** Legitimate second dialogs per second during the flood (and the quiet run). */
  probesPerS: number;
  /**
   * INVITEs per second from a raw stranger socket (127.0.0.5) during the flood's first 5 s, whose
   * answers are counted for 33 s after its last one (past Timer G's 32 s); 0: not measured.
   */
  countedPerS?: number;
}

export interface MoveFigures {
  outcome: string;
  wallMs: number;
  inviteTo200Ms: number;
  maxDowntimeMs: number;
  /** Legitimate second dialogs during the move: answered 200 / started, and INVITE->200. */
  probes: { started: number; answered: number; p50Ms: number; p99Ms: number };
}

export interface FloodReport {
  quiet?: MoveFigures;
  flooded: MoveFigures;
  stranger: SippResult;
  wrongDigest: SippResult;
  garbageSent: number;
  /**
   * The counted stranger's INVITEs, those the agent answered (distinct Call-IDs: what it refused; the rest were
   * lost in a full socket before it read them), every datagram that came back (responses / answered = copies per
   * refusal, 1.0 when sent once) and the most copies any one got.
   */
  reflection?: { invites: number; answered: number; responses: number; mostCopies: number };
  idle: { opened: number; refusedAtOnce: number; openAtEnd: number; agentHeldMax: number };
  rssMiB: { before: number; duringMax: number; after: number };
  /** After the flood and the agent's timers: probe listeners armed, journal entries, the VMs' placement. */
  leftArmed: number;
  /** How long after the flood until nothing was armed (the agent's idle timer, 5 s here). */
  settleMs: number;
  journal: number;
  placement: Record<string, string[]>;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** The destination process: `ready`, then `status` answers on request. */
class Destination {
  readonly child: ChildProcess;
  private readonly lines: string[] = [];
  private readonly waiters = new Set<() => void>();

  constructor(config: string, probes: number) {
    this.child = spawn(process.execPath, [DESTINATION, config, String(probes)], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    readline.createInterface({ input: this.child.stdout! }).on("line", (l) => {
      this.lines.push(l);
      for (const w of this.waiters) w();
    });
    this.child.once("exit", () => {
      for (const w of this.waiters) w();
    });
  }

  next(prefix: string, timeoutMs = 30_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const i = this.lines.findIndex((l) => l.startsWith(prefix));
        if (i < 0 && this.child.exitCode !== null) {
          this.waiters.delete(check);
          clearTimeout(timer);
          return reject(new Error(`flood destination exited (${this.child.exitCode})`));
        }
        if (i < 0) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(this.lines.splice(i, 1)[0]);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`flood destination: no "${prefix}" line in ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  async status(): Promise<{ armed: number; journal: number; inbound: number }> {
    this.child.stdin!.write("status\n");
    const [, armed, journal, inbound] = (await this.next("status")).split(" ").map(Number);
    return { armed, journal, inbound };
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (this.child.exitCode === null) this.child.kill("SIGKILL");
  }
}

function sipp(scenario: string, target: string, from: string, rate: number, seconds: number, extra: string[] = []) {
  const calls = Math.max(1, Math.round(rate * seconds));
  return runSipp(
    [
      target,
      "-sf",
      scenario,
      "-s",
      "dc2",
      "-i",
      from,
      "-t",
      "u1",
      "-r",
      String(rate),
      "-m",
      String(calls),
      "-l",
      String(Math.max(50, rate * 4)),
      "-recv_timeout",
      "8000",
      "-timeout",
      String(seconds + 30),
      "-timeout_error",
      ...extra,
    ],
    (seconds + 60) * 1000,
  );
}

/** Random datagrams, some of them SIP-looking, for `seconds`. */
async function garbage(from: string, port: number, perS: number, seconds: number): Promise<number> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((r) => socket.bind(0, from, r));
  let sent = 0;
  const shapes = [
    () => Buffer.from(Array.from({ length: 1 + Math.floor(Math.random() * 1400) }, () => Math.random() * 256)),
    () => Buffer.from(`INVITE sip:dc2@127.0.0.1 SIP/2.0\r\nVia: ${"x".repeat(Math.random() * 300)}\r\n\r\n`),
    () => Buffer.from("SIP/2.0 200 OK\r\nCSeq: banana\r\nContent-Length: 99999\r\n\r\n"),
    () => Buffer.from("\r\n\r\n"),
  ];
  const end = Date.now() + seconds * 1000;
  const tick = 20;
  while (Date.now() < end) {
    for (let i = 0; i < (perS * tick) / 1000; i++) {
      socket.send(shapes[sent % shapes.length](), port, "127.0.0.1");
      sent++;
    }
    await new Promise((r) => setTimeout(r, tick));
  }
  socket.close();
  return sent;
}

/** Stranger INVITEs for `seconds` (a fresh transaction each, never ACKed); counts what comes back until 33 s later. */
async function countedStranger(port: number, perS: number, seconds: number) {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((r) => socket.bind(0, "127.0.0.5", r));
  let responses = 0;
  const copies = new Map<string, number>();
  socket.on("message", (m) => {
    const text = m.toString("utf8");
    if (!text.startsWith("SIP/2.0 ")) return;
    responses++;
    const callId = /^Call-ID:\s*(\S+)/im.exec(text)?.[1] ?? "";
    copies.set(callId, (copies.get(callId) ?? 0) + 1);
  });
  const local = socket.address().port;
  const offer = fs
    .readFileSync(path.join(FIXTURES, "flood-stranger.xml"), "utf8")
    .match(/<nrdl[^]*?<\/nrdl>/)?.[0]
    .replace(/\[service\]/g, "dc2")
    .replace(/\[remote_ip\]/g, "127.0.0.1")
    .replace(/\[call_number\]/g, "counted");
  if (!offer) throw new Error("flood-stranger.xml carries no NRDL offer");
  let invites = 0;
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    for (let i = 0; i < perS / 50; i++) {
      const id = `counted-${invites++}-${Math.random().toString(36).slice(2)}`;
      const text = [
        `INVITE sip:dc2@127.0.0.1:${port} SIP/2.0`,
        `Via: SIP/2.0/UDP 127.0.0.5:${local};branch=z9hG4bK${id};rport`,
        "Max-Forwards: 70",
        `From: <sip:dc1@operator.example>;tag=${id}`,
        `To: <sip:dc2@127.0.0.1:${port}>`,
        `Call-ID: ${id}`,
        "CSeq: 1 INVITE",
        "Content-Type: application/nrdl+xml",
        `Content-Length: ${Buffer.byteLength(offer)}`,
        "",
        offer,
      ].join("\r\n");
      socket.send(text, port, "127.0.0.1");
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 33_000)); // Timer G would have resent each answer within 32 s
  socket.close();
  return { invites, answered: copies.size, responses, mostCopies: Math.max(0, ...copies.values()) };
}

/** `count` TCP connections that never send a byte, spread over 20 loopback addresses, held `seconds`. */
async function idleConnections(port: number, count: number, seconds: number, held: () => Promise<number>) {
  const sockets: net.Socket[] = [];
  let refusedAtOnce = 0;
  let agentHeldMax = 0;
  for (let i = 0; i < count; i++) {
    const s = net.connect({ host: "127.0.0.1", port, localAddress: `127.0.0.${10 + (i % 20)}` });
    s.on("error", () => undefined);
    s.resume(); // read, so a close by the agent shows here at once
    sockets.push(s);
    if (i % 50 === 49) await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 1000));
  refusedAtOnce = sockets.filter((s) => s.destroyed || s.readableEnded || s.closed).length;
  const end = Date.now() + seconds * 1000 - 1000;
  while (Date.now() < end) {
    agentHeldMax = Math.max(agentHeldMax, await held());
    await new Promise((r) => setTimeout(r, 1000));
  }
  const openAtEnd = sockets.filter((s) => !s.destroyed && !s.closed).length;
  sockets.forEach((s) => s.destroy());
  return { opened: count, refusedAtOnce, openAtEnd, agentHeldMax };
}

function figures(summary: MigrateSummary, wallMs: number, probes: SippResult | undefined): MoveFigures {
  const times = probes?.responseTimesMs ?? [];
  return {
    outcome: summary.outcome,
    wallMs,
    inviteTo200Ms: summary.phases.arming,
    maxDowntimeMs: Math.max(...summary.vms.map((v) => v.downtimeMs ?? NaN)),
    probes: {
      started: probes ? probes.successful + probes.failed : 0,
      answered: probes ? probes.successful : 0,
      p50Ms: percentile(times, 50),
      p99Ms: percentile(times, 99),
    },
  };
}

/** The probe scenario: nrdl-uac.xml with probe<n> VMs (the LoadDriver's, filed under libvirt), never the moved ones. */
function probeScenario(dir: string): string {
  const file = path.join(dir, "flood-probe-uac.xml");
  const text = fs.readFileSync(path.join(FIXTURES, "nrdl-uac.xml"), "utf8");
  const probe = text.replace(/router\[call_number\]" hypervisor="qemu"/g, 'probe[call_number]" hypervisor="libvirt"');
  if (probe === text) throw new Error("nrdl-uac.xml no longer names router[call_number] on qemu");
  fs.writeFileSync(file, probe);
  return file;
}

export async function floodedMove(
  rates: FloodRates,
  opts: { quiet: boolean; log?: (s: string) => void },
): Promise<FloodReport> {
  const log = opts.log ?? (() => undefined);
  const guest = await ensureGuest();
  // short base path: QMP socket paths must stay under 108 bytes
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-flood-"));
  const inventory = VMS.map((v) => ({ ...guestVm(guest, v.name), role: v.role }));
  const low = 20000 + Math.floor(Math.random() * 20000);
  const hostConfig = (name: "dc1" | "dc2", i: number, sip: Record<string, unknown>): HostConfig =>
    parseConfig({
      host: name,
      sip: { aor: `sip:${name}@127.0.0.1`, ...sip },
      inventory,
      runDir: path.join(base, name),
      stateDir: path.join(base, `${name}-state`),
      migration: { address: "127.0.0.1", ports: `${low + i * 100}-${low + i * 100 + 99}` },
      // the legitimate source is 127.0.0.1 (allowlist); a digest is checked when a request carries one
      security: { allow: ["127.0.0.1"], users: { dc1: PASSWORD }, digestRequired: false },
      // dialogs whose caller gave up (a probe sipp timed out) are disarmed after this
      timers: { idleTimeoutS: IDLE_TIMEOUT_S },
    });
  const freePort = async (range: string): Promise<number> => {
    const port = await freePortInRange("127.0.0.1", range);
    if (port === undefined) throw new Error(`no free port in ${range}`);
    return port;
  };
  const tcpPort = await freePort(`${low + 200}-${low + 299}`);
  const udpPort = await freePort(`${low + 300}-${low + 399}`);
  const dc2 = hostConfig("dc2", 1, {
    listen: [
      { transport: "tcp", address: "127.0.0.1", port: tcpPort },
      { transport: "udp", address: "127.0.0.1", port: udpPort },
    ],
  });
  const config = path.join(base, "dc2.json");
  fs.writeFileSync(config, JSON.stringify(dc2, null, 2));
  const dc1 = hostConfig("dc1", 0, { listen: [{ transport: "tcp", address: "127.0.0.1", port: 0 }] });
  const dc1Sip = sipOf(dc1, silentLogger);
  await dc1Sip.start();
  const dc1Host = hostOf(dc1, silentLogger);
  const dc2Host = hostOf(dc2, silentLogger); // the destination process's VMs, seen through their pidfiles
  const source = new SourceAgent({ sip: dc1Sip, host: dc1Host, hostName: "dc1", logger: silentLogger });
  const dc2Uri = `sip:dc2@127.0.0.1:${tcpPort};transport=tcp`;
  const bootOnSource = () => Promise.all(NAMES.map((n) => dc1Host.find(n)!.driver.start(n)));
  const placement = (): Record<string, string[]> =>
    Object.fromEntries(
      NAMES.map((n) => [
        n,
        (["dc1", "dc2"] as const).filter((h) => livePid(path.join(base, h, `${n}.pid`)) !== undefined),
      ]),
    );
  const probeCount = Math.ceil(rates.probesPerS * (rates.seconds + 5)) + 10;
  const dest = new Destination(config, probeCount);
  const udpTarget = `127.0.0.1:${udpPort}`;
  const scenario = probeScenario(base);
  const probes = (seconds: number) =>
    sipp(scenario, udpTarget, "127.0.0.1", rates.probesPerS, seconds, ["-trace_rtt", "-rtt_freq", "1"]);
  const move = async (): Promise<{ summary: MigrateSummary; wallMs: number }> => {
    const t0 = performance.now();
    const summary = await source.migrate({ to: dc2Uri, vms: NAMES, policy: POLICY });
    return { summary, wallMs: performance.now() - t0 };
  };
  try {
    await dest.next("ready");
    const pid = dest.child.pid!;
    let quiet: MoveFigures | undefined;
    if (opts.quiet) {
      await bootOnSource();
      log("quiet move dc1 -> dc2 ...");
      const probing = probes(rates.seconds / 2);
      const m = await move();
      quiet = figures(m.summary, m.wallMs, await probing);
      // the flooded run starts from freshly booted guests too: quit them on dc2, boot them on dc1 again
      await Promise.all(NAMES.map((n) => dc2Host.find(n)!.driver.stop(n)));
    }
    await bootOnSource();
    const before = rssMiB(pid);
    let duringMax = before;
    const sampler = setInterval(() => (duringMax = Math.max(duringMax, rssMiB(pid))), 250);
    log(`flooding for ${rates.seconds} s ...`);
    const stranger = sipp(
      path.join(FIXTURES, "flood-stranger.xml"),
      udpTarget,
      "127.0.0.2",
      rates.strangerPerS,
      rates.seconds,
    );
    const wrongDigest = sipp(
      path.join(FIXTURES, "flood-wrong-digest.xml"),
      udpTarget,
      "127.0.0.3",
      rates.wrongDigestPerS,
      rates.seconds,
    );
    const noise = garbage("127.0.0.4", udpPort, rates.garbagePerS, rates.seconds);
    const counted = rates.countedPerS
      ? countedStranger(udpPort, rates.countedPerS, Math.min(5, rates.seconds))
      : Promise.resolve(undefined);
    const idle = idleConnections(
      tcpPort,
      rates.idleConnections,
      rates.seconds,
      async () => (await dest.status()).inbound,
    );
    await new Promise((r) => setTimeout(r, 2000)); // the flood is on before the move and the probes start
    const probing = probes(Math.max(1, rates.seconds - 4));
    log("flooded move dc1 -> dc2 ...");
    const m = await move();
    const flooded = figures(m.summary, m.wallMs, await probing);
    const [s, d, g, i, reflection] = await Promise.all([stranger, wrongDigest, noise, idle, counted]);
    clearInterval(sampler);
    // nothing may stay armed once the agent's timers ran (a dialog whose caller gave up: idleTimeoutS)
    const settled = Date.now();
    let status = await dest.status();
    while ((status.armed || status.journal) && Date.now() - settled < (IDLE_TIMEOUT_S + 30) * 1000) {
      await new Promise((r) => setTimeout(r, 500));
      status = await dest.status();
    }
    const settleMs = Date.now() - settled;
    const after = rssMiB(pid);
    return {
      quiet,
      flooded,
      stranger: s,
      wrongDigest: d,
      garbageSent: g,
      reflection,
      idle: i,
      rssMiB: { before, duringMax, after },
      leftArmed: status.armed,
      settleMs,
      journal: readJournal(dc2.stateDir).length,
      placement: placement(),
    };
  } finally {
    await dest.stop();
    await dc1Sip.stop().catch(() => undefined);
    await terminateRunDirs(["dc1", "dc2"].map((n) => path.join(base, n)));
    fs.rmSync(base, { recursive: true, force: true });
  }
}
