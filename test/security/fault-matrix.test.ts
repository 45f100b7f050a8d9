/**
 * Fault injection over real agents and real QEMU guests, during the migration itself. After
 * every case the invariant is checked and printed (test/security/fault-report.ts): each VM runs
 * on at most one host (exactly one unless its only process was the one killed), no QEMU,
 * listener or key file is left over, and the operator is told the truth (outcome, exit code,
 * reason). Phases are hit by waiting for migration events, never by sleeping.
 * Cases: QEMU killed (source or destination) during pre-copy and in the pause-before-switchover
 * window; a destination agent killed with SIGKILL and restarted (journal recovery). A degraded
 * link between two network namespaces is in fault-link.test.ts. The kills at
 * each SIP phase (after INVITE, after 200/ACK, before BYE) are in fault-phases.test.ts, whose
 * header holds the whole matrix.
 * This machine's kernel has no sch_netem (nor tc classifiers or actions), so the link is
 * degraded with what it has: delay = a 32 kbit/s tbf with a short queue (every SIP message
 * waits hundreds of ms in the queue, bursts overflow it and are dropped); loss = an nftables
 * rule `numgen random mod 100 < N drop` in each namespace's input hook; blackout = the link
 * taken down. The namespace cases run the CLI (dist/, built here) inside `ip netns exec`.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { hostOf, sipOf } from "../../agents/wiring";
import { parseConfig } from "../../lib/config/load";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { silentLogger } from "../../lib/log/logger";
import { buildNrdl, offerDocument, parseNrdl } from "../../nrdl";
import { NRDL_MIME } from "../../nrdl/types";
import { bootOnSource, guestDefs, startPair, type Pair, SEQUENTIAL } from "../harness";
import { ensureBuilt, runCli } from "../e2e/cli-process";
import { FaultMatrix, journalOf, killQemu, pidIn, until, dirsOf, killPids, writeConfig } from "./fault-report";

jest.setTimeout(180_000);

const policy = { ...SEQUENTIAL, bandwidthMbps: 100 };
const matrix = new FaultMatrix();
afterAll(() => matrix.print());

describe("QEMU killed", () => {
  let pair: Pair | undefined;
  afterEach(async () => {
    await pair?.close();
    pair = undefined;
  });

  // the same kills at the group's stop (pause-before-switchover) are in test/switchover/crash-qemu.test.ts
  it.each([
    ["destination", "pre-copy"],
    ["source", "pre-copy"],
  ] as const)("%s QEMU killed with SIGKILL during %s", async (whose, phase) => {
    pair = await startPair(await guestDefs([["router1", "router"]]));
    await bootOnSource(pair);
    const victim = whose === "source" ? pair.dc1.runDir : pair.dc2.runDir;
    let killedAt: string | undefined;
    const summary = await pair.dc1.agent.migrate(
      {
        to: pair.dc2.uri,
        vms: ["router1"],
        policy: { ...policy, strategy: phase === "pre-copy" ? "sequential" : "switchover" },
      },
      {
        onProgress: (p) => {
          const hit =
            phase === "pre-copy" ? p.phase === "active" && p.transferredBytes > 8 << 20 : p.phase === "pre-switchover";
          if (!hit || killedAt) return;
          killedAt = `${p.phase} at ${(p.transferredBytes / 2 ** 20).toFixed(0)} MiB`;
          killQemu(victim, "router1");
        },
      },
    );
    expect(killedAt).toBeDefined();
    const vm = summary.vms[0];
    // nothing of the destination's is left: the dialog ended and every listener went with it
    await until(
      "no QEMU left on dc2",
      () => pidIn(pair!.dc2.runDir, "router1") === undefined || whose === "destination",
    );
    const inv = matrix.check(
      `${whose} QEMU SIGKILL in ${phase} (${killedAt})`,
      dirsOf(pair.base),
      ["router1"],
      `outcome ${summary.outcome}; router1 ${vm.state}: ${vm.reason ?? ""}`,
    );
    expect(summary.outcome).toBe("failed");
    expect(vm.state).not.toBe("completed");
    // a killed source took the only copy with it
    expect(inv).toEqual({ where: { router1: whose === "destination" ? ["dc1"] : [] }, leftovers: [], journal: [] });
    if (whose === "destination") expect(await pair.dc1.host.find("router1")?.driver.state("router1")).toBe("running");
  });
});

describe("agents as processes", () => {
  let defs: VmDefinition[];
  beforeAll(async () => {
    ensureBuilt();
    defs = await guestDefs([
      ["router1", "router"],
      ["video", "server"],
    ]);
  });

  it(
    "destination agent killed with SIGKILL and restarted: " + "orphaned listener removed, the VM that resumed kept",
    async () => {
      const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-f-"));
      const port = 30000 + Math.floor(Math.random() * 20000);
      const ports = `${port + 1}-${port + 40}`;
      const dc2 = {
        host: "dc2",
        sip: { aor: "sip:dc2@127.0.0.1", listen: [{ transport: "udp", address: "127.0.0.1", port }] },
        inventory: defs,
        runDir: path.join(base, "dc2"),
        stateDir: path.join(base, "dc2-state"),
        migration: { address: "127.0.0.1", ports },
        timers: { idleTimeoutS: 300 },
        security: { allow: ["127.0.0.1"] }, // the lab's loopback, trusted explicitly
      };
      const dc2File = writeConfig(path.join(base, "dc2.json"), dc2);
      const dc1Cfg = parseConfig({
        ...dc2,
        host: "dc1",
        sip: { aor: "sip:dc1@127.0.0.1", listen: [{ transport: "udp", address: "127.0.0.1", port: 0 }] },
        runDir: path.join(base, "dc1"),
        stateDir: path.join(base, "dc1-state"),
      });
      const dc1Host = hostOf(dc1Cfg, silentLogger);
      const dc1Sip = sipOf(dc1Cfg, silentLogger);
      let agent = runCli(["listen", "-c", dc2File]);
      const where = () =>
        Object.fromEntries(
          defs.map((d) => [
            d.name,
            (["dc1", "dc2"] as const).filter((h) => pidIn(path.join(base, h), d.name) !== undefined),
          ]),
        );
      const vms = defs.map((d) => d.name);
      try {
        await agent.waitFor(/listening/);
        await dc1Sip.start();
        for (const d of defs) await dc1Host.find(d.name)?.driver.start(d.name);
        const offer = buildNrdl(
          offerDocument({
            id: "mig-crash",
            sourceUri: "sip:dc1@127.0.0.1",
            destinationUri: "sip:dc2@127.0.0.1",
            vms: defs.map((d) => ({ name: d.name, memoryMib: d.memoryMib })),
          }),
        );
        const { response } = await dc1Sip.invite(`sip:dc2@127.0.0.1:${port}`, {
          contentType: NRDL_MIME,
          content: offer,
        }).established;
        const answer = parseNrdl(response.body?.content ?? "");
        if (!answer.ok || answer.doc.body.kind !== "answer") throw new Error("no NRDL answer");
        const router1 = answer.doc.body.armed.find((a) => a.vm === "router1");
        if (!router1) throw new Error("router1 not armed");
        // router1 moves (its source copy quits), video stays armed on dc2: then the agent dies
        await dc1Host
          .find("router1")!
          .driver.migrate(
            "router1",
            { uri: router1.uri, secret: router1.secret },
            { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 30 },
          ).done;
        expect(where()).toEqual({ router1: ["dc2"], video: ["dc1", "dc2"] });
        agent.child.kill("SIGKILL");
        await agent.exited;
        expect(journalOf(path.join(base, "dc2-state"))).toHaveLength(1);

        agent = runCli(["listen", "-c", dc2File]);
        await agent.waitFor(/listening/);
        expect(agent.output()).toMatch(/recovered: VM resumed here before the restart, keeping it.*router1/);
        expect(agent.output()).toMatch(/recovered: disarming orphaned listener.*video/);
        const inv = matrix.check(
          "destination agent SIGKILL after 1 of 2 VMs moved, then restarted",
          dirsOf(base),
          vms,
          "restart log: router1 kept (resumed here), video's listener disarmed; journal emptied",
        );
        expect(inv).toEqual({ where: { router1: ["dc2"], video: ["dc1"] }, leftovers: [], journal: [] });
      } finally {
        agent.child.kill("SIGTERM");
        await agent.exited;
        await dc1Sip.stop();
        await killPids(path.join(base, "dc1"), path.join(base, "dc2"));
        fs.rmSync(base, { recursive: true, force: true });
      }
    },
  );
});
