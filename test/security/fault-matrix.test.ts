/**
 * Fault injection over real agents and real QEMU guests, during the migration itself. After
 * every case the invariant is checked and printed (test/security/fault-report.ts): each VM runs
 * on at most one host (exactly one unless its only process was the one killed), no QEMU,
 * listener or key file is left over, and the operator is told the truth (outcome, exit code,
 * reason). Phases are hit by waiting for migration events, never by sleeping.
 * Cases: QEMU killed (source or destination) during pre-copy and in the pause-before-switchover
 * window; a destination agent killed with SIGKILL and restarted (journal recovery); a degraded
 * link between two network namespaces during signalling and during the migration. The kills at
 * each SIP phase (after INVITE, after 200/ACK, before BYE) are in fault-phases.test.ts, whose
 * header holds the whole matrix.
 * This machine's kernel has no sch_netem (nor tc classifiers or actions), so the link is
 * degraded with what it has: delay = a 32 kbit/s tbf with a short queue (every SIP message
 * waits hundreds of ms in the queue, bursts overflow it and are dropped); loss = an nftables
 * rule `numgen random mod 100 < N drop` in each namespace's input hook; blackout = the link
 * taken down. The namespace cases run the CLI (dist/, built here) inside `ip netns exec`.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { hostOf, sipOf } from "../../agents/wiring";
import { parseConfig } from "../../lib/config/load";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { terminateRunDirs } from "../../lib/hypervisor/pidfile";
import { silentLogger } from "../../lib/log/logger";
import { buildNrdl, offerDocument, parseNrdl } from "../../nrdl";
import { NRDL_MIME } from "../../nrdl/types";
import { bootOnSource, guestDefs, startPair, type Pair, SEQUENTIAL } from "../harness";
import { ensureBuilt, runCli, type CliProcess } from "../e2e/cli-process";
import { FaultMatrix, journalOf, killQemu, pidIn, until, type HostDirs } from "./fault-report";

jest.setTimeout(180_000);

const policy = { ...SEQUENTIAL, bandwidthMbps: 100 };
const matrix = new FaultMatrix();
afterAll(() => matrix.print());

const dirsOf = (base: string): Record<"dc1" | "dc2", HostDirs> => ({
  dc1: { runDir: path.join(base, "dc1"), stateDir: path.join(base, "dc1-state") },
  dc2: { runDir: path.join(base, "dc2"), stateDir: path.join(base, "dc2-state") },
});

describe("QEMU killed", () => {
  let pair: Pair | undefined;
  afterEach(async () => {
    await pair?.close();
    pair = undefined;
  });

  it.each([
    ["destination", "pre-copy"],
    ["source", "pre-copy"],
    ["destination", "pause-before-switchover"],
    ["source", "pause-before-switchover"],
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

/** The JSON lines a `migrate --json` process printed so far. */
function jsonEvents(p: CliProcess): Array<Record<string, unknown>> {
  return p
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function writeConfig(file: string, cfg: Record<string, unknown>): string {
  fs.writeFileSync(file, JSON.stringify(cfg, null, 2));
  return file;
}

async function killPids(...runDirs: string[]): Promise<void> {
  await terminateRunDirs(runDirs);
}

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

  describe("a degraded link between two network namespaces", () => {
    const tag = randomBytes(3).toString("hex");
    const ns = { dc1: `st-sec-${tag}-1`, dc2: `st-sec-${tag}-2` };
    const net = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 250)}`;
    const ip = { dc1: `${net}.1`, dc2: `${net}.2` };
    const veth = { dc1: `st${tag}a`, dc2: `st${tag}b` };
    const sh = (...args: string[]) => execFileSync(args[0], args.slice(1), { stdio: "pipe" });
    /** A slow link with a short queue on both ends (tc tbf), or back to normal. */
    const slowLink = (on: boolean) => {
      for (const h of ["dc1", "dc2"] as const) {
        const tc = ["ip", "netns", "exec", ns[h], "tc", "qdisc"];
        if (on) sh(...tc, "replace", "dev", veth[h], "root", "tbf", "rate", "32kbit", "burst", "1600", "limit", "3000");
        else sh(...tc, "del", "dev", veth[h], "root");
      }
    };
    /**
     * Random loss of `percent`% of the packets arriving in each namespace (nftables numgen; `udp`:
     * SIP over UDP only), with a counter per side; 0 removes it. Returns the packets dropped so
     * far. On input, not output: a drop in the output hook fails the sender's sendto() with EPERM,
     * which no lossy network does.
     */
    const loss = (percent: number, only?: "udp"): number => {
      let dropped = 0;
      for (const h of ["dc1", "dc2"] as const) {
        const nft = (...args: string[]) =>
          execFileSync("ip", ["netns", "exec", ns[h], "nft", ...args], {
            stdio: "pipe",
            input: args[0] === "-f" ? rules(percent, only) : undefined,
          }).toString();
        dropped += Number(/counter packets (\d+)/.exec(nft("list", "ruleset"))?.[1] ?? 0);
        if (/table inet st-loss/.test(nft("list", "tables"))) nft("delete", "table", "inet", "st-loss");
        if (percent > 0) nft("-f", "-");
      }
      return dropped;
    };
    const rules = (percent: number, only?: "udp") =>
      `table inet st-loss {\n chain in { type filter hook input priority 0; policy accept; ` +
      `${only ? `meta l4proto ${only} ` : ""}numgen random mod 100 < ${percent} counter drop; }\n}\n`;
    const link = (up: boolean) => sh("ip", "-n", ns.dc2, "link", "set", veth.dc2, up ? "up" : "down");
    let base: string;
    let files: { dc1: string; dc2: string; inventory: string };

    beforeAll(() => {
      for (const h of ["dc1", "dc2"] as const) sh("ip", "netns", "add", ns[h]);
      sh("ip", "link", "add", veth.dc1, "netns", ns.dc1, "type", "veth", "peer", "name", veth.dc2, "netns", ns.dc2);
      for (const h of ["dc1", "dc2"] as const) {
        sh("ip", "-n", ns[h], "addr", "add", `${ip[h]}/24`, "dev", veth[h]);
        sh("ip", "-n", ns[h], "link", "set", veth[h], "up");
        sh("ip", "-n", ns[h], "link", "set", "lo", "up");
      }
      base = fs.mkdtempSync(path.join(os.tmpdir(), "st-n-"));
      const inventory = writeConfig(path.join(base, "inv.json"), { vms: defs });
      const mk = (h: "dc1" | "dc2", port: number) =>
        writeConfig(path.join(base, `${h}.json`), {
          host: h,
          sip: { aor: `sip:${h}@${ip[h]}`, listen: [{ transport: "udp", address: ip[h], port }] },
          security: { allow: [`${net}.0/24`], destinations: [`sip:dc2@${ip.dc2}`] },
          inventory,
          runDir: path.join(base, h),
          stateDir: path.join(base, `${h}-state`),
          migration: { address: ip[h], ports: "40000-40050" },
          timers: { idleTimeoutS: 8 },
        });
      files = { dc1: mk("dc1", 5060), dc2: mk("dc2", 5060), inventory };
    });

    afterAll(async () => {
      await killPids(path.join(base, "dc1"), path.join(base, "dc2"));
      for (const h of ["dc1", "dc2"] as const) sh("ip", "netns", "del", ns[h]);
      fs.rmSync(base, { recursive: true, force: true });
    });

    /** Boot router1 on dc1 (inside its namespace), run a destination agent in dc2's, migrate with `opts`. */
    async function migrateAcross(
      extra: string[],
      onEvent: (e: Record<string, unknown>) => void,
    ): Promise<{ code: number | null; migrate: CliProcess; agent: CliProcess }> {
      const boot = runCli(["vm", "start", "router1", "-i", files.inventory, "-r", path.join(base, "dc1")], {
        netns: ns.dc1,
      });
      expect(await boot.exited).toBe(0);
      const agent = runCli(["listen", "-c", files.dc2, "--sip-trace"], { netns: ns.dc2 });
      try {
        await agent.waitFor(/listening/);
        const migrate = runCli(
          ["migrate", "-c", files.dc1, "--to", `sip:dc2@${ip.dc2}:5060`, "--json", "--sip-trace", ...extra, "router1"],
          { netns: ns.dc1 },
        );
        let seen = 0;
        const watch = setInterval(() => {
          const events = jsonEvents(migrate);
          events.slice(seen).forEach(onEvent);
          seen = events.length;
        }, 50);
        const code = await migrate.exited;
        clearInterval(watch);
        jsonEvents(migrate).slice(seen).forEach(onEvent);
        // the destination ends every dialog (BYE, or its idle timer when the BYE was lost)
        await until(
          "destination listeners gone or VM resumed there",
          () => pidIn(path.join(base, "dc2"), "router1") === undefined || code === 0,
          30_000,
        );
        return { code, migrate, agent };
      } finally {
        agent.child.kill("SIGTERM");
        await agent.exited;
      }
    }

    function summaryOf(m: CliProcess): Record<string, unknown> | undefined {
      return jsonEvents(m).find((e) => e.event === "summary");
    }

    /** The invariant of a namespace case: router1 where `host` says, nothing left, the journal empty. */
    function checked(name: string, told: string, host: "dc1" | "dc2"): void {
      const inv = matrix.check(name, dirsOf(base), ["router1"], told);
      expect(inv).toEqual({ where: { router1: [host] }, leftovers: [], journal: [] });
    }

    it(
      "a 32 kbit/s link with a short queue during signalling (delays, drops): SIP retransmissions " +
        "carry the dialog, the VM moves",
      async () => {
        slowLink(true);
        let lifted = false;
        const started = Date.now();
        let signalledMs = 0;
        const { code, migrate } = await migrateAcross(["--bandwidth-mbps", "400"], (e) => {
          if (e.event === "start" && !lifted) {
            lifted = true; // signalling done, the migration itself runs on a normal link
            signalledMs = Date.now() - started;
            slowLink(false);
          }
        });
        checked(
          `32 kbit/s tbf link during signalling (INVITE->migrate ${signalledMs} ms)`,
          `exit ${code}; outcome ${String(summaryOf(migrate)?.outcome)}`,
          "dc2",
        );
        expect(lifted).toBe(true);
        expect(code).toBe(0);
        // hand the VM back to dc1's namespace for the next case
        await killPids(path.join(base, "dc2"));
      },
    );

    it(
      "30% random loss of SIP over UDP for the whole dialog: retransmissions complete INVITE, " +
        "INFO and BYE, the VM moves",
      async () => {
        loss(30, "udp");
        let dropped = 0;
        try {
          // 150 Mbit/s: a few seconds of progress INFOs, so the loss has twenty-odd datagrams to hit
          const { code, migrate, agent } = await migrateAcross(["--bandwidth-mbps", "150"], () => undefined);
          dropped = loss(0);
          const traces = { dc1: sipSent(migrate.output()), dc2: sipSent(agent.output()) };
          const resent = { dc1: retransmissions(traces.dc1), dc2: retransmissions(traces.dc2) };
          checked(
            "30% UDP loss (nftables numgen) during signalling",
            `exit ${code}; outcome ${String(summaryOf(migrate)?.outcome)}; ${dropped} of ` +
              `${traces.dc1.length + traces.dc2.length} SIP datagrams dropped; retransmissions dc1 ` +
              `${resent.dc1}, dc2 ${resent.dc2}`,
            "dc2",
          );
          expect(dropped).toBeGreaterThan(0); // P(no drop in ~25 datagrams at 30%) < 0.02%
          expect(code).toBe(0);
          expect(summaryOf(migrate)?.outcome).toBe("completed");
        } finally {
          loss(0);
        }
        await killPids(path.join(base, "dc2"));
      },
    );

    it("10% random loss of every packet during the migration: QEMU's TCP copes, the VM moves (slower)", async () => {
      let dropped = 0;
      let lossy = false;
      const started = Date.now();
      try {
        const { code, migrate } = await migrateAcross(["--bandwidth-mbps", "400", "--timeout-s", "90"], (e) => {
          if (e.event === "start" && !lossy) {
            lossy = true;
            loss(10);
          }
        });
        dropped = loss(0);
        const vm = (summaryOf(migrate)?.vms as Array<Record<string, unknown>> | undefined)?.[0];
        checked(
          "10% loss of all packets during the migration",
          `exit ${code}; outcome ${String(summaryOf(migrate)?.outcome)}; ${dropped} packets dropped; ` +
            `move ${String(vm?.totalMs)} ms (whole run ${Date.now() - started} ms)`,
          "dc2",
        );
        expect(lossy).toBe(true);
        expect(dropped).toBeGreaterThan(0);
        expect(code).toBe(0);
      } finally {
        loss(0);
      }
      await killPids(path.join(base, "dc2"));
    });

    it(
      "a link blackout during pre-copy, longer than " + "--timeout-s: the VM stays on the source, exit non-zero",
      async () => {
        let blackout = false;
        // ~74 MiB at 300 Mbit/s takes ~2 s: the 8 s timeout only fires because of the blackout
        const { code, migrate } = await migrateAcross(["--bandwidth-mbps", "300", "--timeout-s", "8"], (e) => {
          if (e.event === "progress" && Number(e.transferredBytes) > 4 << 20 && !blackout) {
            blackout = true;
            link(false);
            // back up once the source has given up, so its BYE (retransmitted) gets through
            setTimeout(() => link(true), 11_000);
          }
        });
        const summary = summaryOf(migrate);
        checked(
          "link down during pre-copy, longer than --timeout-s",
          `exit ${code}; outcome ${String(summary?.outcome)}; ${JSON.stringify(summary?.vms ?? "")}`,
          "dc1",
        );
        expect(blackout).toBe(true);
        expect(code).not.toBe(0);
        expect(summary?.outcome).toBe("failed");
      },
    );
  });
});

/** The SIP messages a `--sip-trace` log shows sent: first line, Via branch and CSeq of each. */
function sipSent(log: string): string[] {
  return log
    .split(/\n(?=\d\d:\d\d:\d\d\.\d{3} )/)
    .map((entry) => /^\S+ \w+ sip sent \S+ \S+\n([^\r\n]*)\r?\n([\s\S]*)$/.exec(entry))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => `${m[1]}|${/branch=([^;\s,]+)/i.exec(m[2])?.[1]}|${/^CSeq:\s*(.+?)\s*$/im.exec(m[2])?.[1]}`);
}

/** How many of them went out more than once: UDP retransmissions of requests, 200 OKs and their ACKs. */
function retransmissions(sent: string[]): number {
  return sent.length - new Set(sent).size;
}
