/**
 * Two hosts on one machine for end-to-end tests: dc1 (source agent) and dc2 (destination agent),
 * each with its own run dir and SIP endpoint on loopback, identical inventories of real guests.
 * The SIP backend is a parameter (backends.ts), the hypervisor driver comes with the guests'
 * definitions (drivers.ts). `placement()` is the invariant every test ends with: each VM runs on
 * exactly one host.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DestinationAgent } from "../../agents/destination/agent";
import { SourceAgent } from "../../agents/source/agent";
import type { MigrateSummary, SourceEvents } from "../../agents/source/types";
import { hostOf } from "../../agents/wiring";
import { parseConfig } from "../../lib/config/load";
import { TeleportError } from "../../lib/errors";
import type { HostConfig } from "../../lib/config/schema";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import type { Host } from "../../lib/hypervisor/host";
import { livePid, terminateRunDirs } from "../../lib/hypervisor/pidfile";
import { freePortInRange } from "../../lib/net/ports";
import { createLogger, silentLogger, type Logger } from "../../lib/log/logger";
import type { TraceEvent } from "../../lib/sip";
import type { Policy } from "../../nrdl/types";
import { DrachtioWithOwnServer } from "../../lib/sip/drachtio/own-server";
import { startDrachtioServer, type DrachtioServer } from "../../lib/sip/drachtio/server-process";
import { defaultBackend, sipBackend, type BackendKind, type TestSipBackend } from "./backends";

export type Transport = "udp" | "tcp" | "tls";
export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export interface Side {
  cfg: HostConfig;
  host: Host;
  sip: TestSipBackend;
  runDir: string;
  trace: TraceEvent[];
}

export interface Pair {
  base: string;
  defs: VmDefinition[];
  dc1: Side & { agent: SourceAgent };
  /** `agent` is absent when the test runs the destination as its own process (`destination: false`). */
  dc2: Side & { agent?: DestinationAgent; uri: string };
  /** The SIP backend each side runs on. */
  backend: { dc1: BackendKind; dc2: BackendKind };
  /** drachtio-servers started for a side's own process (dc2 with `destination: false` on drachtio). */
  servers: Partial<Record<"dc1" | "dc2", DrachtioServer>>;
  close(): Promise<void>;
}

export interface PairOptions {
  transport?: Transport;
  /** Overrides for dc2's config (security, timers, ...); `sip` and `migration` fields are merged into theirs. */
  dc2?: Record<string, unknown>;
  /** Overrides for dc1's config; `sip` fields are merged into its sip section (e.g. tls). */
  dc1?: Record<string, unknown>;
  /** false: no in-process destination agent; the test starts `sip-teleport listen` itself. */
  destination?: boolean;
  logger?: Logger;
  /**
   * The SIP backend of both agents (default: SIP_TELEPORT_TEST_BACKEND, else sip.js), or one per
   * side for mixed pairs (e.g. a sip.js source calling a drachtio destination).
   */
  backend?: BackendKind | { dc1: BackendKind; dc2: BackendKind };
}

/** The plan most tests move with: one VM at a time, no bandwidth cap, abort on the first error. */
export const SEQUENTIAL: Policy = {
  strategy: "sequential",
  maxParallel: 1,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 60,
  onError: "abort",
};

// below the kernel's ephemeral ports (32768-60999), which outgoing connections take at random
let portBase = 20000 + Math.floor(Math.random() * 12000);

function side(
  base: string,
  name: string,
  defs: VmDefinition[],
  transport: Transport,
  extra: Record<string, unknown> = {},
  sipPort = 0,
): HostConfig {
  const ports = portBase;
  portBase += 50;
  const { sip, migration, security, ...rest } = extra as {
    sip?: Record<string, unknown>;
    migration?: Record<string, unknown>;
    security?: Record<string, unknown>;
  };
  return parseConfig({
    host: name,
    sip: { aor: `sip:${name}@127.0.0.1`, listen: [{ transport, address: "127.0.0.1", port: sipPort }], ...sip },
    inventory: defs,
    runDir: path.join(base, name),
    stateDir: path.join(base, `${name}-state`),
    migration: { address: "127.0.0.1", ports: `${ports}-${ports + 49}`, ...migration },
    // A lab on one machine trusts its loopback explicitly (no default does); a test's own allow replaces it.
    security: { allow: ["127.0.0.0/8", "::1"], ...security },
    ...rest,
  });
}

export async function startPair(defs: VmDefinition[], opts: PairOptions = {}): Promise<Pair> {
  const transport = opts.transport ?? "udp";
  // SIP_TELEPORT_TEST_LOG=debug shows both agents' logs while a test runs
  const logger =
    opts.logger ??
    (process.env.SIP_TELEPORT_TEST_LOG ? createLogger({ level: process.env.SIP_TELEPORT_TEST_LOG }) : silentLogger);
  // short base path: QMP socket paths must stay under 108 bytes
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-e2e-"));
  const mk = (name: "dc1" | "dc2", extra?: Record<string, unknown>, sipPort?: number) => {
    const cfg = side(base, name, defs, transport, extra, sipPort);
    const kind = typeof opts.backend === "object" ? opts.backend[name] : (opts.backend ?? defaultBackend());
    const sip = sipBackend(cfg, logger, {}, kind);
    const trace: TraceEvent[] = [];
    sip.onTrace((e) => trace.push(e));
    return { cfg, host: hostOf(cfg, logger), sip, runDir: cfg.runDir, trace, kind };
  };
  // What is started is stopped again when a later step fails (a drachtio-server that would not start, a port
  // taken): a half-built pair that no test can close would keep jest alive after the run.
  const started: Array<() => Promise<unknown>> = [];
  const close = async () => {
    for (const stop of started.reverse()) await stop().catch(() => undefined);
    started.length = 0;
    await killAll(base);
    fs.rmSync(base, { recursive: true, force: true });
  };
  try {
    // a destination run as its own process needs a port known in advance
    const d2 = mk(
      "dc2",
      opts.dc2,
      opts.destination === false ? await freePortInRange("127.0.0.1", `${portBase}-${portBase + 49}`) : 0,
    );
    portBase += 50;
    // a drachtio destination run as its own process attaches to a server started for it here
    const servers: Pair["servers"] = {};
    if (opts.destination === false && d2.kind === "drachtio") {
      servers.dc2 = await startDrachtioServer({ sipPort: d2.cfg.sip.listen[0].port });
      started.push(() => servers.dc2?.stop() ?? Promise.resolve());
    }
    const dest =
      opts.destination === false
        ? undefined
        : new DestinationAgent({ config: d2.cfg, sip: d2.sip, host: d2.host, logger });
    if (dest) {
      // stop() as well when start() fails halfway: it releases whatever start() had opened
      started.push(() => dest.stop());
      await dest.start();
    }
    const port = dest ? d2.sip.listeners[0].port : d2.cfg.sip.listen[0].port;
    const d1 = mk("dc1", opts.dc1);
    started.push(() => d1.sip.stop());
    await d1.sip.start();
    // stateDir: a switchover is offered with group commit, as the CLI does (nrdl/SPEC.md 5.6)
    const source = new SourceAgent({ sip: d1.sip, host: d1.host, hostName: "dc1", logger, stateDir: d1.cfg.stateDir });
    return {
      base,
      defs,
      dc1: { ...d1, agent: source },
      dc2: { ...d2, agent: dest, uri: `sip:dc2@127.0.0.1:${port};transport=${transport}` },
      backend: { dc1: d1.kind, dc2: d2.kind },
      servers,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** One pair per test, closed (agents, VMs, run dirs) after each: `const start = pairPerTest()` in a describe. */
export function pairPerTest(): (defs: VmDefinition[], opts?: PairOptions) => Promise<Pair> {
  let pair: Pair | undefined;
  afterEach(async () => {
    await pair?.close();
    pair = undefined;
  });
  return async (defs, opts) => (pair = await startPair(defs, opts));
}

/** A second source agent on dc1 (ephemeral ports) with other SIP settings, e.g. digest credentials. */
export async function extraSource(
  pair: Pair,
  sip: Partial<HostConfig["sip"]>,
  logger: Logger = silentLogger,
): Promise<{ agent: SourceAgent; sip: TestSipBackend; stop(): Promise<void> }> {
  const backend = sipBackend({ ...pair.dc1.cfg, sip: { ...pair.dc1.cfg.sip, ...sip } }, logger, { ephemeral: true });
  await backend.start();
  const stateDir = pair.dc1.cfg.stateDir;
  return {
    agent: new SourceAgent({ sip: backend, host: pair.dc1.host, hostName: "dc1", logger, stateDir }),
    sip: backend,
    stop: () => backend.stop(),
  };
}

/** Move `vms` (all by default) from dc1 to dc2, then check the one-host invariant whatever the outcome. */
export async function move(
  pair: Pair,
  opts: { vms?: string[]; policy?: Policy; events?: SourceEvents; agent?: SourceAgent } = {},
): Promise<MigrateSummary> {
  const agent = opts.agent ?? pair.dc1.agent;
  const vms = opts.vms ?? pair.defs.map((d) => d.name);
  const summary = await agent.migrate({ to: pair.dc2.uri, vms, policy: opts.policy ?? SEQUENTIAL }, opts.events);
  expectOneHostEach(pair);
  return summary;
}

/** The invariant: every VM runs on exactly one host (dc1 or dc2, whichever). */
export function expectOneHostEach(pair: Pair): void {
  const where = placement(pair);
  expect(Object.entries(where).filter(([, hosts]) => hosts.length !== 1)).toEqual([]);
}

/** The TeleportError a promise rejects with; fails the test when it resolves. */
export async function refusal(p: Promise<unknown>): Promise<TeleportError> {
  try {
    await p;
  } catch (err) {
    return TeleportError.from(err);
  }
  throw new Error("expected a refusal, got success");
}

/** Write a side's configuration to a file, for a `sip-teleport` process of its own. */
export function configFile(pair: Pair, name: "dc1" | "dc2", overrides: Record<string, unknown> = {}): string {
  const file = path.join(pair.base, `${name}.json`);
  const cfg = { ...pair[name].cfg, ...drachtioSection(pair, name), ...overrides };
  fs.writeFileSync(file, JSON.stringify(cfg, null, 2));
  return file;
}

/**
 * A drachtio side's process attaches to that side's drachtio-server (dc2's own process to the
 * server started for it, a dc1 process to the pair's dc1 server, as a second app); the secret
 * goes in a file of the pair's base dir.
 */
function drachtioSection(pair: Pair, name: "dc1" | "dc2"): Record<string, unknown> {
  if (pair.backend[name] !== "drachtio") return {};
  const server = pair.servers[name] ?? (pair[name].sip as DrachtioWithOwnServer).ownServer;
  if (!server) throw new Error(`no drachtio-server for ${name}`);
  const secretFile = path.join(pair.base, `${name}-drachtio.secret`);
  fs.writeFileSync(secretFile, server.secret + "\n", { mode: 0o600 });
  return {
    sip: {
      ...pair[name].cfg.sip,
      backend: "drachtio",
      drachtio: { host: server.address, port: server.adminPort, secretFile },
    },
  };
}

/** Start the VMs on dc1, as the source host's operator would before a migration. */
export async function bootOnSource(pair: Pair, names = pair.defs.map((d) => d.name)): Promise<void> {
  await Promise.all(names.map((n) => pair.dc1.host.find(n)?.driver.start(n)));
}

/** Where each VM has a live process: the invariant is exactly one host per VM. */
export function placement(pair: Pair): Record<string, string[]> {
  return Object.fromEntries(
    pair.defs.map((d) => [
      d.name,
      (["dc1", "dc2"] as const).filter((h) => livePid(path.join(pair[h].runDir, `${d.name}.pid`)) !== undefined),
    ]),
  );
}

/** Every VM on `host` only, and running there. */
export async function expectAllOn(pair: Pair, host: "dc1" | "dc2"): Promise<void> {
  expect(placement(pair)).toEqual(Object.fromEntries(pair.defs.map((d) => [d.name, [host]])));
  for (const d of pair.defs) expect(await pair[host].host.find(d.name)?.driver.state(d.name)).toBe("running");
}

async function killAll(base: string): Promise<void> {
  await terminateRunDirs(
    fs
      .readdirSync(base)
      .map((d) => path.join(base, d))
      .filter((d) => fs.statSync(d).isDirectory()),
  );
}

export interface ExtraDestination {
  cfg: HostConfig;
  host: Host;
  uri: string;
  runDir: string;
  stop(): Promise<void>;
}

/**
 * One more destination agent for a pair (evacuating to several hosts): `name`'s run and state
 * dirs in the pair's base (so `pair.close()` kills its guests), its own SIP endpoint and migration
 * ports; `defs` replaces its inventory (a host provisioned differently), `config` adds settings.
 */
export async function extraDestination(
  pair: Pair,
  name: string,
  opts: { defs?: VmDefinition[]; config?: Record<string, unknown>; logger?: Logger } = {},
): Promise<ExtraDestination> {
  const transport = pair.dc2.cfg.sip.listen[0].transport;
  const cfg = side(pair.base, name, opts.defs ?? pair.defs, transport, opts.config);
  const logger = opts.logger ?? silentLogger;
  const sip = sipBackend(cfg, logger, {}, pair.backend.dc2);
  const host = hostOf(cfg, logger);
  const agent = new DestinationAgent({ config: cfg, sip, host, logger });
  await agent.start();
  const uri = `sip:${name}@127.0.0.1:${sip.listeners[0].port};transport=${transport}`;
  return { cfg, host, uri, runDir: cfg.runDir, stop: () => agent.stop().catch(() => undefined) };
}
