/**
 * Crashes around a real migration: agents killed with SIGKILL at the worst moments. Whatever
 * happens, each VM must run on exactly one host afterwards, and nothing may be left armed.
 */
import path from "node:path";
import { readJournal } from "../../agents/destination/journal";
import { livePid } from "../../lib/hypervisor/pidfile";
import { runCli, ensureBuilt, type CliProcess } from "./cli-process";
import {
  bootOnSource,
  configFile,
  expectAllOn,
  guestDefs,
  placement,
  SEQUENTIAL,
  startPair,
  type Pair,
} from "../harness";

// slow enough (96 MiB at 4 Mbit/s takes minutes) that a kill always lands mid-migration
const slow = { ...SEQUENTIAL, bandwidthMbps: 4, timeoutS: 120 };

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 30000): Promise<void> {
  for (const end = Date.now() + ms; !(await cond());) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const journal = (pair: Pair): string[] => readJournal(pair.dc2.cfg.stateDir).map((e) => e.callId);

describe("faults", () => {
  let pair: Pair;
  const procs: CliProcess[] = [];
  beforeAll(() => ensureBuilt());
  afterEach(async () => {
    for (const p of procs.splice(0)) p.child.kill("SIGKILL");
    await pair?.close();
  });

  /** `sip-teleport listen` for dc2 as a process of its own, once it listens. */
  async function listenDc2(): Promise<CliProcess> {
    const dest = runCli(["listen", "-c", configFile(pair, "dc2")]);
    procs.push(dest);
    await dest.waitFor(/listening as/);
    return dest;
  }

  /** router1 and video running on dc1, and `sip-teleport migrate` of both to dc2 as a process of its own. */
  async function migrateBoth(...flags: string[]): Promise<CliProcess> {
    pair = await startPair(
      await guestDefs([
        ["router1", "router"],
        ["video", "server"],
      ]),
    );
    await bootOnSource(pair);
    const source = runCli([
      "migrate",
      "-c",
      configFile(pair, "dc1"),
      "--to",
      pair.dc2.uri,
      ...flags,
      "router1",
      "video",
    ]);
    procs.push(source);
    return source;
  }

  it(
    "source agent killed after the ACK: the destination disarms " +
      "when the source falls silent; the VM never left dc1",
    async () => {
      pair = await startPair(await guestDefs([["router1", "router"]]), { dc2: { timers: { idleTimeoutS: 2 } } });
      await bootOnSource(pair);
      const source = runCli([
        "migrate",
        "-c",
        configFile(pair, "dc1"),
        "--to",
        pair.dc2.uri,
        "--bandwidth-mbps",
        "4",
        "router1",
      ]);
      procs.push(source);
      await source.waitFor(/router1: migration started/);
      expect(placement(pair).router1.sort()).toEqual(["dc1", "dc2"]); // the listener is armed on dc2
      source.child.kill("SIGKILL");
      // the QEMUs go on migrating without the agent; the destination's idle timer ends that
      await until(() => !placement(pair).router1.includes("dc2"), "dc2's listener is gone", 60000);
      await until(
        async () => (await pair.dc1.host.find("router1")?.driver.state("router1")) === "running",
        "router1 runs on dc1 again",
      );
      await expectAllOn(pair, "dc1");
      // the journal entry goes right after the listener's QEMU: wait for it rather than race it
      await until(() => journal(pair).length === 0, "dc2's journal is empty");
    },
  );

  it(
    "destination host killed mid-migration (agent and its QEMU): the source reports the " +
      "failure, the VM keeps running on dc1",
    async () => {
      pair = await startPair(await guestDefs([["router1", "router"]]), { transport: "tcp", destination: false });
      await bootOnSource(pair);
      const dest = await listenDc2();
      let killed = false;
      const summary = await pair.dc1.agent.migrate(
        { to: pair.dc2.uri, vms: ["router1"], policy: slow },
        {
          onStart: () => {
            setTimeout(() => {
              dest.child.kill("SIGKILL");
              const pid = livePid(path.join(pair.dc2.runDir, "router1.pid"));
              if (pid) process.kill(pid, "SIGKILL");
              killed = true;
            }, 500);
          },
        },
      );
      expect(killed).toBe(true);
      expect(summary.outcome).toBe("failed");
      expect(summary.vms[0]).toMatchObject({ vm: "router1", state: "failed", host: "dc1" });
      await expectAllOn(pair, "dc1");
      // the restarted destination finds the orphaned dialog in its journal and clears it
      await listenDc2();
      expect(journal(pair)).toEqual([]);
      await expectAllOn(pair, "dc1");
    },
  );

  it(
    "destination agent (not its QEMU) killed mid-migration: the VM " +
      "completes on dc2, and the restarted agent keeps it",
    async () => {
      pair = await startPair(await guestDefs([["router1", "router"]]), { transport: "tcp", destination: false });
      await bootOnSource(pair);
      const dest = await listenDc2();
      const summary = await pair.dc1.agent.migrate(
        { to: pair.dc2.uri, vms: ["router1"], policy: { ...slow, bandwidthMbps: 0 } },
        { onStart: () => dest.child.kill("SIGKILL") },
      );
      // QEMU finishes the move on its own; the source tells the truth about both
      expect(summary.vms[0]).toMatchObject({ vm: "router1", state: "completed" });
      expect(summary.destinationReport).toBeUndefined();
      await expectAllOn(pair, "dc2");
      expect(journal(pair)).toHaveLength(1);
      await listenDc2();
      expect(journal(pair)).toEqual([]);
      await expectAllOn(pair, "dc2");
    },
  );

  it(
    "Ctrl-C during the migration: the running migration is " +
      "cancelled, the VM stays on dc1, the dialog ends with BYE",
    async () => {
      const source = await migrateBoth("--bandwidth-mbps", "4");
      await source.waitFor(/router1: migration started/);
      source.child.kill("SIGINT");
      expect(await source.exited).toBe(1);
      expect(source.output()).toMatch(/interrupted; cancelling/);
      expect(source.output()).toMatch(/router1\s+aborted/);
      expect(source.output()).toMatch(/video\s+aborted/);
      await until(
        async () => (await pair.dc1.host.find("router1")?.driver.state("router1")) === "running",
        "router1 runs on dc1 again",
      );
      await until(() => !Object.values(placement(pair)).some((h) => h.includes("dc2")), "dc2 disarmed");
      await expectAllOn(pair, "dc1");
      expect(journal(pair)).toEqual([]);
    },
  );

  it("Ctrl-C before the answer sends CANCEL: nothing stays armed", async () => {
    const source = await migrateBoth("--ladder");
    await source.waitFor(/calling sip:dc2/);
    source.child.kill("SIGINT");
    expect(await source.exited).toBe(3);
    expect(source.output()).toMatch(/487/);
    expect(source.output()).toMatch(/CANCEL/);
    await until(() => !Object.values(placement(pair)).some((h) => h.includes("dc2")), "dc2 disarmed");
    await expectAllOn(pair, "dc1");
  });
});
