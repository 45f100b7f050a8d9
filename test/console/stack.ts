/**
 * A source host with its console and a destination agent on loopback, both real: the harness's
 * SIP backend on ephemeral ports, its driver on their own run directories ("dc1", "dc2"), the
 * test guest for the VMs. Optionally a second, strict destination that refuses us (403).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DestinationAgent } from "../../agents/destination/agent";
import { startConsole, type RunningConsole } from "../../agents/console";
import { parseConfig } from "../../lib/config/load";
import type { HostConfig } from "../../lib/config/schema";
import type { HypervisorDriver, VmDefinition } from "../../lib/hypervisor/driver";
import { createDriver } from "../../lib/hypervisor/drivers";
import { Host } from "../../lib/hypervisor/host";
import { silentLogger } from "../../lib/log/logger";
import type { Role } from "../../nrdl/types";
import { guestDefs, sipBackend, type TestSipBackend } from "../harness";

export interface Side {
  cfg: HostConfig;
  sip: TestSipBackend;
  driver: HypervisorDriver;
  uri: string;
}

export interface Stack {
  base: string;
  source: Side;
  dest: Side;
  /** A destination that allows nobody on loopback: every call to it ends in 403. */
  strict: Side;
  console: RunningConsole;
  /** Start a VM on the source host. */
  boot(vm: string): Promise<void>;
  /** Where each VM runs: ["dc1"], ["dc2"], [] or both (the invariant wants exactly one). */
  whereRuns(vm: string): Promise<string[]>;
  /** Stop the console (keeps the stack) and start a fresh one on the same state dir. */
  restartConsole(): Promise<RunningConsole>;
  close(): Promise<void>;
}

const ROLES: Record<string, Role> = { router1: "router", video: "server" };

function sideConfig(base: string, name: string, raw: Record<string, unknown> = {}): HostConfig {
  return parseConfig(
    {
      host: name,
      sip: { aor: `sip:${name}@127.0.0.1`, listen: [{ transport: "udp", address: "127.0.0.1", port: 0 }] },
      runDir: path.join(base, name),
      stateDir: path.join(base, `${name}-state`),
      // the lab's hosts trust each other's loopback explicitly (no default trusts an address)
      security: { allow: ["127.0.0.0/8"] },
      ...raw,
    },
    base,
  );
}

async function side(cfg: HostConfig, inventory: VmDefinition[]): Promise<Side> {
  const sip = sipBackend(cfg, silentLogger);
  const driver = createDriver(inventory[0].hypervisor, { runDir: cfg.runDir, inventory, logger: silentLogger });
  return { cfg, sip, driver, uri: "" };
}

/** A destination agent on its own side, started; its URI names the port it bound. */
async function destination(
  cfg: HostConfig,
  inventory: VmDefinition[],
): Promise<{ side: Side; agent: DestinationAgent }> {
  const s = await side(cfg, inventory);
  const agent = new DestinationAgent({ config: s.cfg, sip: s.sip, host: new Host([s.driver]), logger: silentLogger });
  await agent.start();
  s.uri = `sip:${cfg.host}@127.0.0.1:${s.sip.listeners[0].port}`;
  return { side: s, agent };
}

export interface StackOptions {
  vms: string[];
  /** console.token of the source host. */
  token?: string;
  /** security.allow of the source host (who may send MESSAGE triggers). */
  allow?: string[];
  /** console.plans of the source host. */
  plans?: Record<string, { vms: string[] }>;
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const inventory = await guestDefs(opts.vms.map((name) => [name, ROLES[name] ?? "server"]));
  // Short base path: QMP socket paths must stay under 108 bytes.
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-con-"));

  const { side: dest, agent: destAgent } = await destination(sideConfig(base, "dc2"), inventory);
  const strictCfg = sideConfig(base, "dc3", { security: { allow: ["192.0.2.1"] } });
  const { side: strict, agent: strictAgent } = await destination(strictCfg, inventory);

  const sourceCfg = sideConfig(base, "dc1", {
    console: { http: "127.0.0.1:0", destinations: [dest.uri, strict.uri], token: opts.token, plans: opts.plans ?? {} },
    security: { allow: opts.allow ?? [] },
  });
  const source = await side(sourceCfg, inventory);
  const sourceHost = new Host([source.driver]);
  const open = () => startConsole({ config: source.cfg, sip: source.sip, host: sourceHost, logger: silentLogger });
  let running = await open();
  await source.sip.start();
  source.uri = `sip:dc1@127.0.0.1:${source.sip.listeners[0].port}`;

  const stack: Stack = {
    base,
    source,
    dest,
    strict,
    console: running,
    boot: (vm) => source.driver.start(vm),
    whereRuns: async (vm) => {
      const out: string[] = [];
      for (const s of [source, dest]) if ((await s.driver.state(vm)) === "running") out.push(s.cfg.host);
      return out;
    },
    restartConsole: async () => {
      await running.stop();
      running = await open();
      stack.console = running;
      return running;
    },
    close: async () => {
      await running.stop();
      await source.sip.stop();
      await destAgent.stop();
      await strictAgent.stop();
      for (const s of [source, dest]) for (const vm of opts.vms) await s.driver.stop(vm).catch(() => undefined);
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
  return stack;
}

/** Wait until `check` returns a value (not undefined), polling; fail with `what` after `ms`. */
export async function until<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  ms = 30_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
