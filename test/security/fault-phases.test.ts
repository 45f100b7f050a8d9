/**
 * kill -9 at each phase of the dialog: the source agent, the destination agent or a QEMU, with
 * real agents as separate processes where one is killed (the source runs as `sip-teleport
 * console`, whose Call / Migrate / Bye steps stop at a phase for as long as the test wants; the
 * destination as `sip-teleport listen`). Phases are reached by observable events (the
 * destination's journal entry, the SIP trace, the console's line state), never by sleeping.
 * After every case the invariant is checked and printed (test/security/fault-report.ts).
 *
 * The whole matrix (victim x phase), with the file that covers each cell:
 *
 *   victim \ phase | after INVITE       | after 200 / ACK     | pre-copy               | switchover    | before BYE
 * source agent   | here (Timer H)     | here (idle timer)   | here (1), e2e/faults   | qemu-failures (2) | here (idle
 * timer)
 * dest. agent    | here (answer t/o)  | here, restarted     | e2e/faults (3)         | as pre-copy (4) | here,
 * restarted
 *   source QEMU    | as after 200 (5)   | here                | fault-matrix           | fault-matrix  | n/a (6)
 *   dest. QEMU     | as after 200 (5)   | here                | fault-matrix           | fault-matrix  | here
 *
 * (1) Here the migration completes without its agent: dc2 keeps the VM, and the source's
 * paused copy stays until a source agent starts again and quits it. In e2e/faults ("source
 * agent killed after the ACK", once the migration started) it is too slow to complete, and dc2's
 * idle timer ends it, the VM staying on dc1.
 * (2) A switchover wave holds each VM running in pre-copy until the whole wave is ready; a VM that
 * converged on its own waits paused at pre-switchover. A dead source agent leaves that migration
 * going (the VM keeps running at the source, or stays paused there); the next source agent cancels
 * it at start (settleOrphanedMigration), tested on the driver in test/hypervisor/qemu-failures.
 * (3) The destination host (agent and QEMU) killed, and the agent alone, restarted after the VM
 * completed. (4) The destination agent plays no part in the switchover: QEMU completes it.
 * (5) Before the 200 nothing is armed that the source relies on: a source VM gone is a 409
 * before the INVITE (e2e/refusals); a listener QEMU dying while it starts makes the destination
 * answer 500 Arming Failed (not hit by a kill here: the window is QEMU's start-up). The "after
 * 200" cells cover both QEMUs dying before the migration. (6) After a completed move the source QEMU has
 * already quit. Sip.js keeps RFC 3261's T1 = 500 ms, so the Timer H case takes 32 s. Timer B
 * does not help a source whose destination died after its 100 Trying: timers.answerTimeoutS
 * (4 s here) does.
 * VMs with copied disks (NRDL 2) have a phase more, the disk mirror before pre-copy: its cells
 * (source and destination agents, source and destination QEMUs killed, the link cut, operator
 * abort, destination disk full) are in fault-disks.test.ts; the mirror a dead source agent left
 * is stopped by the next agent (test/disks/driver.test.ts).
 */
import fs from "node:fs";
import type { MigrateSummary } from "../../agents/source/agent";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import type { QemuDriver } from "../../lib/hypervisor/qemu";
import { QmpClient } from "../../lib/hypervisor/qmp";
import { apiClient, type ApiClient } from "../console/http";
import { ensureBuilt, runCli, type CliProcess } from "../e2e/cli-process";
import { bootOnSource, configFile, guestDefs, startPair, type Pair, type PairOptions, SEQUENTIAL } from "../harness";
import { capturingLogger, FaultMatrix, journalOf, killQemu, pidIn, until, type Invariant } from "./fault-report";

jest.setTimeout(180_000);

const matrix = new FaultMatrix();
afterAll(() => matrix.print());

let defs: VmDefinition[];
beforeAll(async () => {
  ensureBuilt();
  defs = await guestDefs([["router1", "router"]]);
});

/** One case's world: a pair of hosts, the processes it started, and the destination's log when in-process. */
interface World {
  pair: Pair;
  procs: CliProcess[];
  destLog: string[];
}

async function world(opts: PairOptions = {}): Promise<World> {
  const { logger, lines } = capturingLogger();
  const pair = await startPair(defs, { ...opts, logger });
  await bootOnSource(pair);
  return { pair, procs: [], destLog: lines };
}

async function close(w: World | undefined): Promise<void> {
  if (!w) return;
  for (const p of w.procs) p.child.kill("SIGKILL");
  await Promise.all(w.procs.map((p) => p.exited));
  await w.pair.close();
}

const dirs = (pair: Pair) => ({
  dc1: { runDir: pair.dc1.runDir, stateDir: pair.dc1.cfg.stateDir },
  dc2: { runDir: pair.dc2.runDir, stateDir: pair.dc2.cfg.stateDir },
});
const check = (w: World, name: string, told: string): Invariant => matrix.check(name, dirs(w.pair), ["router1"], told);
const journal = (w: World) => journalOf(w.pair.dc2.cfg.stateDir);
const runningOn = async (w: World, host: "dc1" | "dc2") =>
  (await w.pair[host].host.find("router1")?.driver.state("router1")) === "running";

/** SIP messages dc2 (in-process) sent or received, by their first line. */
function dc2Messages(w: World, direction: "sent" | "received", firstLine: RegExp): string[] {
  return w.pair.dc2.trace
    .filter((e) => e.direction === direction && firstLine.test(e.message.split("\r\n", 1)[0]))
    .map((e) => e.message);
}

/** The source host as `sip-teleport console` on an ephemeral HTTP port: its API is the operator's buttons. */
async function consoleOf(w: World): Promise<{ proc: CliProcess; api: ApiClient }> {
  const proc = runCli(["console", "-c", configFile(w.pair, "dc1"), "--http", "127.0.0.1:0"]);
  w.procs.push(proc);
  await proc.waitFor(/console at http:\/\/\S+/);
  // the page's address as printed: the URL, then #token=TOKEN (as a notebook server prints it)
  const [, url, token] = /console at (http:\/\/[^\s#]+)#token=(\S+)/.exec(proc.output()) ?? [];
  return { proc, api: apiClient(url ?? "", token) };
}

/** The destination as `sip-teleport listen` on the port the pair gave it. */
async function listenerOf(w: World, ...extra: string[]): Promise<CliProcess> {
  const proc = runCli(["listen", "-c", configFile(w.pair, "dc2"), ...extra]);
  w.procs.push(proc);
  await proc.waitFor(/listening as/);
  return proc;
}

async function kill9(p: CliProcess): Promise<void> {
  p.child.kill("SIGKILL");
  await p.exited;
}

const vmLine = (s: MigrateSummary) =>
  s.vms.map((v) => `${v.vm} ${v.state} on ${v.host}${v.reason ? `: ${v.reason}` : ""}`).join("; ");

describe("killed right after the INVITE", () => {
  it(
    "source agent killed right after its INVITE: dc2 arms, answers, retransmits the 200, gets " +
      "no ACK, disarms at Timer H; the VM stays on dc1",
    async () => {
      // T1 100 ms: Timer H (64 x T1) is 6.4 s instead of 32 (both agents, sip.js' timers are per process)
      const t1 = { sip: { timerT1Ms: 100 } };
      const w = await world({ dc2: { timers: { idleTimeoutS: 2 }, ...t1 }, dc1: t1 });
      try {
        const source = await consoleOf(w);
        // dies with the process
        void source.api.post("/api/call", { to: w.pair.dc2.uri, vms: ["router1"] }).catch(() => undefined);
        await until("dc2 journals the INVITE (arming starts)", () => journal(w).length > 0, 30_000, 5);
        await kill9(source.proc);
        const killedAt = Date.now();
        await until("dc2 answered 200 OK", () => dc2Messages(w, "sent", /^SIP\/2\.0 200/).length > 0, 30_000);
        await until("dc2 gave up on the ACK and disarmed", () => journal(w).length === 0, 60_000);
        const gaveUpS = ((Date.now() - killedAt) / 1000).toFixed(1);
        expect(Number(gaveUpS)).toBeGreaterThanOrEqual(6); // not before 64 x T1 = 6.4 s after the 200
        const oks = dc2Messages(w, "sent", /^SIP\/2\.0 200/).length;
        const why = w.destLog.find((l) => /no ACK for our 200 OK/.test(l)) ?? "";
        const inv = check(
          w,
          "source agent SIGKILL after INVITE (before 200)",
          `dc2 sent the 200 ${oks} times, no ACK; after ${gaveUpS} s: ` +
            `${JSON.parse(why || "{}").why ?? "?"}, BYE to the dead source`,
        );
        expect(oks).toBeGreaterThanOrEqual(5); // T1, 2T1, 4T1, 8T1... over 64 x T1
        expect(dc2Messages(w, "received", /^ACK /)).toEqual([]);
        expect(why).toMatch(/no ACK for our 200 OK/);
        expect(dc2Messages(w, "sent", /^BYE /).length).toBeGreaterThan(0);
        expect(inv).toEqual({ where: { router1: ["dc1"] }, leftovers: [], journal: [] });
        expect(await runningOn(w, "dc1")).toBe(true);

        // the source restarted: dc2 holds nothing from the dead dialog, the move goes through
        const again = await consoleOf(w);
        expect((await again.api.post("/api/call", { to: w.pair.dc2.uri, vms: ["router1"] })).status).toBe(200);
        await again.api.post("/api/migrate");
        await until(
          "the restarted source finished",
          async () => (await again.api.get<{ phase: string }>("/api/state")).body.phase === "finished",
          60_000,
        );
        const bye = await again.api.post<MigrateSummary>("/api/bye");
        const after = check(w, "  ...source restarted, migrates again", `outcome ${bye.body.outcome}`);
        expect(bye.body.outcome).toBe("completed");
        expect(after).toEqual({ where: { router1: ["dc2"] }, leftovers: [], journal: [] });
      } finally {
        await close(w);
      }
    },
  );

  it(
    "destination agent killed while arming (after its 100 Trying): the source CANCELs at " +
      "timers.answerTimeoutS and exits 3 with 408; the restarted agent drops the journal entry, nothing armed stays",
    async () => {
      const w = await world({ destination: false });
      try {
        const dest = await listenerOf(w, "--sip-trace");
        const dc1File = configFile(w.pair, "dc1", { timers: { ...w.pair.dc1.cfg.timers, answerTimeoutS: 4 } });
        // the journal entry is written just before arming: inotify tells us at once, and the kill goes out from the
        // callback
        fs.mkdirSync(w.pair.dc2.cfg.stateDir, { recursive: true, mode: 0o700 });
        const killed = new Promise<void>((resolve) => {
          const watcher = fs.watch(w.pair.dc2.cfg.stateDir, () => {
            if (journal(w).length === 0) return;
            dest.child.kill("SIGKILL");
            watcher.close();
            resolve();
          });
        });
        const source = runCli(["migrate", "-c", dc1File, "--to", w.pair.dc2.uri, "router1"]);
        w.procs.push(source);
        await killed;
        await dest.exited;
        const trying = /SIP\/2\.0 100 Trying/.test(dest.output());
        const answered = /SIP\/2\.0 200/.test(dest.output()); // its trace: killed before it could answer
        const code = await source.exited;
        const told = /sip-teleport: .*(\n {2}.*)*/.exec(source.output())?.[0] ?? "";
        const dest2 = await listenerOf(w);
        const recovered = dest2.output().match(/recovered: [^{]*/g) ?? [];
        const inv = check(
          w,
          "destination agent SIGKILL while arming (after INVITE)",
          `restart: ${recovered.join("; ") || "journal entry dropped, nothing armed yet"}; ` +
            `source exit ${code}: ${told}`,
        );
        expect(trying).toBe(true); // Timer B no longer runs: only our answer timeout ends the wait
        expect(answered).toBe(false);
        expect(code).toBe(3);
        expect(told).toMatch(/408 Request Timeout\s+no final answer to the INVITE within 4 s .*CANCEL sent/);
        expect(inv).toEqual({ where: { router1: ["dc1"] }, leftovers: [], journal: [] });
        expect(await runningOn(w, "dc1")).toBe(true);
      } finally {
        await close(w);
      }
    },
  );
});

describe("source agent killed", () => {
  let w: World | undefined;
  afterEach(async () => {
    await close(w);
    w = undefined;
  });

  it("after the ACK, before any migration: dc2's idle timer disarms it; the VM stays on dc1", async () => {
    w = await world({ dc2: { timers: { idleTimeoutS: 2 } } });
    const source = await consoleOf(w);
    const answered = await source.api.post<{ phase: string }>("/api/call", { to: w.pair.dc2.uri, vms: ["router1"] });
    expect(answered.body.phase).toBe("armed");
    await until("dc2 got the ACK", () => dc2Messages(w!, "received", /^ACK /).length === 1);
    await kill9(source.proc);
    await until("dc2 disarmed on its idle timer", () => journal(w!).length === 0, 30_000);
    const why = w.destLog.find((l) => /ending dialog/.test(l)) ?? "";
    const inv = check(
      w,
      "source agent SIGKILL after ACK (armed, nothing moving)",
      `dc2: ${JSON.parse(why || "{}").why ?? "?"}; BYE to the dead source`,
    );
    expect(why).toMatch(/no news from the source for 2 s/);
    expect(inv).toEqual({ where: { router1: ["dc1"] }, leftovers: [], journal: [] });
    expect(await runningOn(w, "dc1")).toBe(true);
  });

  it(
    "before the BYE, every VM moved: dc2 keeps what resumed, ends " +
      "the dialog on its idle timer; nothing left on dc1",
    async () => {
      w = await world({ dc2: { timers: { idleTimeoutS: 2 } } });
      const source = await consoleOf(w);
      await source.api.post("/api/call", { to: w.pair.dc2.uri, vms: ["router1"] });
      await source.api.post("/api/migrate");
      await until(
        "every VM moved",
        async () => (await source.api.get<{ phase: string }>("/api/state")).body.phase === "finished",
        60_000,
      );
      const rows = (await source.api.get<{ rows: Array<{ vm: string; phase: string }> }>("/api/state")).body.rows;
      expect(rows).toEqual([expect.objectContaining({ vm: "router1", phase: "completed" })]);
      await kill9(source.proc);
      await until("dc2 ended the dialog", () => journal(w!).length === 0, 30_000);
      const finished = JSON.parse(w.destLog.find((l) => /dialog finished/.test(l)) ?? "{}") as {
        why?: string;
        resumedHere?: string[];
      };
      // the operator's console, restarted, shows the VM gone from dc1
      const again = await consoleOf(w);
      const inventory = (await again.api.get<{ vms: Array<{ name: string; state: string }> }>("/api/inventory")).body
        .vms;
      const inv = check(
        w,
        "source agent SIGKILL before BYE (all moved)",
        `dc2: ${finished.why}, kept ${finished.resumedHere?.join(",")}; restarted console shows ` +
          `router1 ${inventory[0]?.state} on dc1`,
      );
      expect(finished.why).toMatch(/no news from the source/);
      expect(finished.resumedHere).toEqual(["router1"]);
      expect(inv).toEqual({ where: { router1: ["dc2"] }, leftovers: [], journal: [] });
      expect(await runningOn(w, "dc2")).toBe(true);
      expect(inventory).toEqual([
        expect.objectContaining({ name: "router1", state: expect.stringMatching(/absent|stopped/) }),
      ]);
    },
  );

  it(
    "during pre-copy, the migration completing without it: dc2 keeps the VM that resumed; the " +
      "restarted source quits its stale paused copy",
    async () => {
      w = await world({ dc2: { timers: { idleTimeoutS: 8 } } });
      const source = await consoleOf(w);
      // 100 Mbit/s: ~5 s of pre-copy, time to kill the agent in it, and done well before dc2's 8 s idle timer
      await source.api.post("/api/call", { to: w.pair.dc2.uri, vms: ["router1"], policy: { bandwidthMbps: 100 } });
      await source.api.post("/api/migrate");
      const moving = async () =>
        ((await source.api.get<{ rows: Array<{ transferredBytes: number }> }>("/api/state")).body.rows[0]
          ?.transferredBytes ?? 0) >
        1 << 20;
      await until("router1's pre-copy is under way", moving, 30_000, 20);
      await kill9(source.proc);
      // QEMU finishes the move on its own; dc2 hears nothing more and ends the dialog on its idle timer
      await until("dc2 ended the dialog", () => journal(w!).length === 0, 40_000);
      const finished = JSON.parse(w.destLog.find((l) => /dialog finished/.test(l)) ?? "{}") as {
        why?: string;
        resumedHere?: string[];
      };
      const dc1 = await w.pair.dc1.host.find("router1")?.driver.state("router1");
      // the VM never runs twice, but its old QEMU is still on dc1, paused (postmigrate), until the source restarts
      expect(dc1).toBe("stopped");
      const again = await consoleOf(w);
      const recovered = /recovered: [^{]*/.exec(again.proc.output())?.[0] ?? "";
      const inv = check(
        w,
        "source agent SIGKILL in pre-copy, migration completes alone",
        `dc2: ${finished.why}, kept ${finished.resumedHere?.join(",")}; dc1's copy was left ${dc1} ` +
          `until the restarted console: ${recovered}`,
      );
      expect(finished.resumedHere).toEqual(["router1"]);
      expect(await runningOn(w, "dc2")).toBe(true);
      expect(recovered).toMatch(/recovered: it had moved away: quit its stale paused copy/);
      expect(inv).toEqual({ where: { router1: ["dc2"] }, leftovers: [], journal: [] });
    },
  );
});

describe("destination agent killed and restarted", () => {
  let w: World | undefined;
  afterEach(async () => {
    await close(w);
    w = undefined;
  });

  it(
    "after the 200 OK, restarted before the migration: the orphaned listener is disarmed, the " +
      "source is told the move failed; the VM stays on dc1",
    async () => {
      w = await world({ destination: false });
      const dest = await listenerOf(w);
      const call = await w.pair.dc1.agent.call({ to: w.pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL });
      expect(pidIn(w.pair.dc2.runDir, "router1")).toBeDefined(); // armed
      await kill9(dest);
      expect(pidIn(w.pair.dc2.runDir, "router1")).toBeDefined(); // the listener outlives its agent
      const dest2 = await listenerOf(w);
      expect(dest2.output()).toMatch(/recovered: disarming orphaned listener.*router1/);
      const outcomes = await call.run();
      const summary = await call.bye();
      const inv = check(
        w,
        "destination agent SIGKILL after 200, restarted before migrating",
        `source: outcome ${summary.outcome}; ${vmLine(summary)}; destination report ` +
          `${summary.destinationReport ? "received" : "none (dialog unknown to the restarted agent)"}`,
      );
      expect(outcomes[0]).toMatchObject({ vm: "router1", state: "failed" });
      expect(summary.outcome).toBe("failed");
      expect(summary.vms[0]).toMatchObject({
        vm: "router1",
        state: "failed",
        host: "dc1",
        reason: expect.stringMatching(/\S/),
      });
      expect(summary.destinationReport).toBeUndefined();
      expect(inv).toEqual({ where: { router1: ["dc1"] }, leftovers: [], journal: [] });
      expect(await runningOn(w, "dc1")).toBe(true);
    },
  );

  it(
    "before the BYE, every VM moved: the restarted agent keeps the VM; the source reports it " +
      "moved, without the destination's report",
    async () => {
      w = await world({ destination: false });
      const dest = await listenerOf(w);
      const call = await w.pair.dc1.agent.call({ to: w.pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL });
      const outcomes = await call.run();
      expect(outcomes[0]).toMatchObject({ vm: "router1", state: "completed" });
      await kill9(dest);
      const dest2 = await listenerOf(w);
      const summary = await call.bye();
      const inv = check(
        w,
        "destination agent SIGKILL before BYE, restarted",
        `source: outcome ${summary.outcome}; ${vmLine(summary)}; ` +
          `destination report ${summary.destinationReport ? "received" : "none"}; ` +
          `restart: ${dest2.output().match(/recovered: [^{]*/)?.[0] ?? ""}`,
      );
      expect(dest2.output()).toMatch(/recovered: VM resumed here before the restart, keeping it.*router1/);
      expect(summary.outcome).toBe("completed");
      expect(summary.vms[0]).toMatchObject({ vm: "router1", state: "completed" });
      expect(summary.destinationReport).toBeUndefined();
      expect(inv).toEqual({ where: { router1: ["dc2"] }, leftovers: [], journal: [] });
      expect(await runningOn(w, "dc2")).toBe(true);
    },
  );
});

describe("QEMU killed outside the migration", () => {
  let w: World | undefined;
  afterEach(async () => {
    await close(w);
    w = undefined;
  });

  it.each(["dc2", "dc1"] as const)(
    "%s's QEMU killed after the 200 OK, before the migration: the move fails with a reason, dc2 disarms at BYE",
    async (victim) => {
      w = await world();
      const call = await w.pair.dc1.agent.call({ to: w.pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL });
      killQemu(w.pair[victim].runDir, "router1");
      await call.run();
      const summary = await call.bye();
      const dest = summary.destinationReport?.results[0];
      const inv = check(
        w,
        `${victim === "dc1" ? "source" : "destination"} QEMU SIGKILL after 200 (before migrating)`,
        `source: outcome ${summary.outcome}; ${vmLine(summary)}; dc2 report: ${dest?.state} ${dest?.reason ?? ""}`,
      );
      expect(summary.outcome).toBe("failed");
      expect(summary.vms[0]).toMatchObject({
        vm: "router1",
        state: "failed",
        host: "dc1",
        reason: expect.stringMatching(/\S/),
      });
      expect(dest).toMatchObject({ vm: "router1", state: expect.stringMatching(/failed|aborted/) });
      // a killed listener: the VM runs on dc1; a killed source VM: its only copy is gone, and said so
      expect(inv).toEqual({ where: { router1: victim === "dc2" ? ["dc1"] : [] }, leftovers: [], journal: [] });
    },
  );

  it(
    "destination QEMU killed after the VM resumed there, before the BYE: both sides report it, " +
      "nothing claims the VM runs",
    async () => {
      w = await world();
      const call = await w.pair.dc1.agent.call({ to: w.pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL });
      expect((await call.run())[0]).toMatchObject({ state: "completed" });
      killQemu(w.pair.dc2.runDir, "router1");
      const summary = await call.bye();
      const dest = summary.destinationReport?.results[0];
      const inv = check(
        w,
        "destination QEMU SIGKILL before BYE (VM had resumed)",
        `source: ${vmLine(summary)}; dc2 report: ${dest?.state} ${dest?.reason ?? ""}`,
      );
      // the truth, not "did not resume": it ran at dc2, and died there before the BYE
      expect(dest).toMatchObject({
        vm: "router1",
        state: "failed",
        reason: expect.stringMatching(/^it resumed here, then was (absent|stopped) at the dialog's end/),
      });
      expect(summary.vms[0].reason).toMatch(/destination reports failed/);
      expect(inv).toEqual({ where: { router1: [] }, leftovers: [], journal: [] });
    },
  );

  it(
    "a VM paused at the destination after it resumed there, before the BYE: kept paused there, never removed, " +
      "and reported as such",
    async () => {
      w = await world();
      const call = await w.pair.dc1.agent.call({ to: w.pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL });
      expect((await call.run())[0]).toMatchObject({ state: "completed" });
      // the guest stopped at dc2 (as an I/O error or an operator would): its only copy, paused
      const dc2 = w.pair.dc2.host.find("router1")?.driver as QemuDriver;
      const mon = await QmpClient.connect(dc2.files("router1").mon);
      await mon.execute("stop").finally(() => mon.close());
      const summary = await call.bye();
      const dest = summary.destinationReport?.results[0];
      const inv = check(
        w,
        "destination VM paused before BYE (VM had resumed)",
        `source: ${vmLine(summary)}; dc2 report: ${dest?.state} ${dest?.reason ?? ""}`,
      );
      expect(dest).toMatchObject({
        vm: "router1",
        state: "failed",
        reason: expect.stringMatching(/^it resumed here, then was paused at the dialog's end/),
      });
      expect(inv).toEqual({ where: { router1: ["dc2"] }, leftovers: [], journal: [] });
      expect(await dc2.state("router1")).toBe("paused");
    },
  );
});
