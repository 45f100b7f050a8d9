/**
 * Fault injection over a degraded link between two network namespaces, with real agents (the CLI
 * from dist/, inside `ip netns exec`) and a real QEMU guest: during signalling and during the
 * migration. After every case the invariant is checked and printed (fault-report.ts), as in
 * fault-matrix.test.ts.
 * This machine's kernel has no sch_netem (nor tc classifiers or actions), so the link is
 * degraded with what it has: delay = a 32 kbit/s tbf with a short queue (every SIP message
 * waits hundreds of ms in the queue, bursts overflow it and are dropped); loss = an nftables
 * rule `numgen random mod 100 < N drop` in each namespace's input hook; blackout = the link
 * taken down.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { guestDefs } from "../harness";
import { ensureBuilt, runCli, type CliProcess } from "../e2e/cli-process";
import { FaultMatrix, pidIn, until, dirsOf, killPids, writeConfig } from "./fault-report";

jest.setTimeout(180_000);

const matrix = new FaultMatrix();
afterAll(() => matrix.print());

/** The JSON lines a `migrate --json` process printed so far. */
function jsonEvents(p: CliProcess): Array<Record<string, unknown>> {
  return p
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

let defs: VmDefinition[];
beforeAll(async () => {
  ensureBuilt();
  defs = await guestDefs([
    ["router1", "router"],
    ["video", "server"],
  ]);
});

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
      // ~74 MiB at 300 Mbit/s takes ~2 s: the 6 s timeout only fires because of the blackout
      const { code, migrate } = await migrateAcross(["--bandwidth-mbps", "300", "--timeout-s", "6"], (e) => {
        if (e.event === "progress" && Number(e.transferredBytes) > 4 << 20 && !blackout) {
          blackout = true;
          link(false);
          // back up once the source has given up, so its BYE (retransmitted) gets through
          setTimeout(() => link(true), 8_000);
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
