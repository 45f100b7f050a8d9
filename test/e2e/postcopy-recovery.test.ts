/**
 * Post-copy recovery, for real: a guest whose writer outruns the link (st.dirty=24 over 160 Mbit/s,
 * a 1 ms downtime limit, so pre-copy never converges) moves with convergence=postcopy from dc1
 * (this process, the root namespace) to dc2 (a `sip-teleport listen` process in its own network
 * namespace, with its QEMU). Once pre-copy runs, the test switches it to post-copy through the VM's
 * monitor (so most pages are still on dc1, however much the TCG guest managed to write), and the moment
 * the source reports post-copy, the link goes down (the namespace's end of the veth: a blackout both
 * ways, SIP and migration alike).
 * - Restored after 3 s: the source sees its post-copy stall, pauses it, asks dc2 over the open
 *   dialog (INFO <recover>) for a new listener and secret, resumes; the VM ends on dc2 alone and
 *   its writer's pass counter, kept in guest memory, goes on where it stopped on dc1.
 * - Restored only after the source's recovery deadline (2 s here): the source gives up, both
 *   halves stay paused (neither runs alone, neither is stopped), and both agents say so.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { SourceAgent } from "../../agents/source/agent";
import type { MigrateSummary } from "../../agents/source/types";
import { hostOf, sipOf } from "../../agents/wiring";
import { ensureGuest, guestVm } from "../../lib/guest/guest";
import { parseConfig } from "../../lib/config/load";
import type { MigrationPhase, VmDefinition } from "../../lib/hypervisor/driver";
import type { Host } from "../../lib/hypervisor/host";
import type { QemuDriver } from "../../lib/hypervisor/qemu";
import { QmpClient } from "../../lib/hypervisor/qmp";
import { terminateRunDirs } from "../../lib/hypervisor/pidfile";
import { createLogger, silentLogger } from "../../lib/log/logger";
import type { AgentSip } from "../../agents/wiring";
import { SEQUENTIAL, writerPasses } from "../harness";
import { ensureBuilt, runCli, type CliProcess } from "./cli-process";
import { StrangerNet } from "../security/netns";
import { pidIn, until } from "../security/fault-report";

jest.setTimeout(60_000);

/** One guest per case, both booted at once (a TCG boot is the slowest part of this test). */
const RECOVERS = "pc1";
const SPLITS = "pc2";
// SIP_TELEPORT_TEST_LOG=info shows the source agent's log while the test runs
const log = process.env.SIP_TELEPORT_TEST_LOG
  ? createLogger({ level: process.env.SIP_TELEPORT_TEST_LOG })
  : silentLogger;
const policy = {
  ...SEQUENTIAL,
  bandwidthMbps: 160,
  downtimeLimitMs: 1,
  timeoutS: 60,
  convergence: "postcopy" as const,
};

let net: StrangerNet;
let base: string;
let defs: VmDefinition[];
let dest: CliProcess;
let dc1: { host: Host; sip: AgentSip };
let dc2Host: Host;
const dir = (h: "dc1" | "dc2") => path.join(base, h);

beforeAll(async () => {
  ensureBuilt();
  const guest = await ensureGuest();
  defs = [RECOVERS, SPLITS].map((name) => {
    const def = guestVm(guest, name);
    def.append = `${def.append} st.dirty=24`;
    return def;
  });
  net = await StrangerNet.create();
  base = fs.mkdtempSync(path.join(os.tmpdir(), "st-pc-"));
  const common = { inventory: defs, timers: { idleTimeoutS: 30 } };
  const dc2 = {
    ...common,
    host: "dc2",
    sip: { aor: `sip:dc2@${net.strangerAddress}`, listen: [{ transport: "udp", address: net.strangerAddress }] },
    security: { allow: [`${net.hostAddress}/32`] },
    runDir: dir("dc2"),
    stateDir: path.join(base, "dc2-state"),
    migration: { address: net.strangerAddress, ports: "41000-41050" },
  };
  fs.writeFileSync(path.join(base, "dc2.json"), JSON.stringify(dc2));
  dc2Host = hostOf(parseConfig(dc2), silentLogger); // reads dc2's QEMUs through their monitors' sockets
  dest = runCli(["listen", "-c", path.join(base, "dc2.json")], { netns: net.ns });
  const cfg = parseConfig({
    ...common,
    host: "dc1",
    sip: { aor: `sip:dc1@${net.hostAddress}`, listen: [{ transport: "udp", address: net.hostAddress, port: 0 }] },
    runDir: dir("dc1"),
    stateDir: path.join(base, "dc1-state"),
    migration: { address: net.hostAddress, ports: "41000-41050" },
  });
  dc1 = { host: hostOf(cfg, log), sip: sipOf(cfg, log) };
  await dc1.sip.start();
  await dest.waitFor(/listening/);
  await Promise.all(defs.map((d) => dc1.host.find(d.name)!.driver.start(d.name)));
  await until("the guests' writers on dc1", () => defs.every((d) => passes("dc1", d.name).length >= 1), 40_000);
});

afterAll(async () => {
  if (process.env.SIP_TELEPORT_TEST_LOG) console.log(`destination agent:\n${dest?.output()}`);
  dest?.child.kill("SIGTERM");
  await dest?.exited;
  await dc1?.sip.stop();
  if (base) await terminateRunDirs([dir("dc1"), dir("dc2")]);
  await net?.setLink(true).catch(() => undefined);
  await net?.destroy();
  if (base) fs.rmSync(base, { recursive: true, force: true });
});

const passes = (host: "dc1" | "dc2", vm: string) => writerPasses(dir(host), vm);

/** migrate-start-postcopy through the source VM's short-query monitor (the driver asks it too: not kept). */
async function startPostcopy(vm: string): Promise<void> {
  const mon = await QmpClient.connect((dc1.host.find(vm)!.driver as QemuDriver).files(vm).mon);
  try {
    await mon.execute("migrate-start-postcopy");
  } finally {
    await mon.close();
  }
}

/**
 * Boot the guest on dc1 and move it, taking the link down when post-copy starts and up again
 * after `outageMs`; resolves with the summary and every phase the source reported.
 */
async function moveWithOutage(
  vm: string,
  outageMs: number,
  recoveryS: number,
): Promise<{ summary: MigrateSummary; phases: MigrationPhase[]; timeline: string }> {
  // a writer that just made a pass: a starved guest would let even a 1 ms limit converge
  const seen = passes("dc1", vm).length;
  await until(`a fresh pass of ${vm}'s writer`, () => passes("dc1", vm).length > seen, 20_000);
  const agent = new SourceAgent({
    sip: dc1.sip,
    host: dc1.host,
    hostName: "dc1",
    logger: log,
    postcopyRecoveryS: recoveryS,
  });
  const phases: MigrationPhase[] = [];
  const events: string[] = [];
  let cutAt = 0;
  const mark = (what: string): void => {
    if (cutAt) events.push(`${what} ${Date.now() - cutAt} ms`);
  };
  let restored: Promise<void> | undefined;
  let forced: Promise<void> | undefined;
  const summary = await agent.migrate(
    { to: `sip:dc2@${net.strangerAddress}:5060`, vms: [vm], policy },
    {
      onProgress: (p) => {
        if (phases[phases.length - 1] !== p.phase) {
          phases.push(p.phase);
          mark(p.phase);
        }
        // Post-copy now, in the first pass, as an operator can with QMP: most pages are still on dc1 when
        // the link goes, whatever the guest wrote (when the agent switches by itself is convergence.test.ts).
        if (p.phase === "active" && !forced) forced = startPostcopy(vm);
        if (p.phase !== "postcopy" || restored) return;
        cutAt = Date.now();
        restored = net
          .setLink(false)
          .then(() => new Promise((r) => setTimeout(r, outageMs)))
          .then(() => net.setLink(true))
          .then(() => mark("link up"));
      },
    },
  );
  mark(`done (${summary.outcome})`);
  await forced;
  await restored;
  return { summary, phases, timeline: `link down 0 ms, ${events.join(", ")}` };
}

test("link cut mid post-copy, then restored: recovered over SIP, the VM ends on dc2, memory whole", async () => {
  const { summary, phases, timeline } = await moveWithOutage(RECOVERS, 3000, 20);
  console.log(`post-copy recovery: ${timeline}`);
  expect(phases).toEqual(expect.arrayContaining(["postcopy", "postcopy-paused", "postcopy-recover"]));
  expect(phases.indexOf("postcopy-paused")).toBeGreaterThan(phases.indexOf("postcopy"));
  expect(summary.outcome).toBe("completed");
  expect(summary.vms[0]).toMatchObject({ vm: RECOVERS, state: "completed" });
  expect(summary.destinationReport?.results[0]).toMatchObject({ vm: RECOVERS, state: "completed" });
  // exactly one host runs it, and it runs
  expect(pidIn(dir("dc1"), RECOVERS)).toBeUndefined();
  expect(await dc2Host.find(RECOVERS)!.driver.state(RECOVERS)).toBe("running");
  // the writer's counter lives in guest memory: on dc2 it goes on from where dc1 left it, by one
  const before = passes("dc1", RECOVERS);
  await until("three more passes on dc2", () => passes("dc2", RECOVERS).length >= 3, 20_000);
  const after = passes("dc2", RECOVERS);
  const last = before[before.length - 1];
  expect(after[0]).toBeGreaterThan(last);
  expect(after[0]).toBeLessThanOrEqual(last + 2); // a line cut at the switch is lost, no more
  expect(after.every((n, i) => i === 0 || n === after[i - 1] + 1)).toBe(true);
  await terminateRunDirs([dir("dc2")]); // its writer would take the CPU the next case's guest needs
});

test("the link comes back only after the recovery deadline: both halves stay paused, never run twice", async () => {
  const { summary, phases, timeline } = await moveWithOutage(SPLITS, 6000, 2);
  console.log(`post-copy past the deadline: ${timeline}`);
  expect(phases).toContain("postcopy-paused");
  expect(summary.outcome).toBe("failed");
  const vm = summary.vms[0];
  expect(vm.state).toBe("failed");
  expect(vm.host).toMatch(/^split: dc1 \+ sip:dc2@/);
  expect(vm.reason).toMatch(/could not be recovered within 2 s.*both halves stay paused/);
  // the source's half is stopped and kept (it holds the pages not sent yet), dc2's too
  expect(await dc1.host.find(SPLITS)!.driver.state(SPLITS)).toBe("postcopy");
  expect(pidIn(dir("dc2"), SPLITS)).toBeDefined(); // its monitor may wait for a page: ask its agent (report)
  await expect(dc1.host.find(SPLITS)!.driver.stop(SPLITS)).rejects.toMatchObject({ status: 409 });
  expect(summary.destinationReport?.results[0]).toMatchObject({ vm: SPLITS, state: "failed" });
  expect(summary.destinationReport?.results[0].host).toMatch(/^split: dc2 \+ sip:dc1@/);
});
