/**
 * The agent pair end to end: real SIP on loopback, real QEMU guests, the NRDL dialog
 * INVITE/200/ACK/INFO.../BYE, and the invariant that each VM runs on exactly one host.
 */
import { ladderSteps } from "../../lib/sip/ladder";
import { formatSummary } from "../../agents/source/progress-display";
import {
  bootOnSource,
  expectAllOn,
  guestDefs,
  placement,
  type Transport,
  SEQUENTIAL,
  pairPerTest,
  move,
} from "../harness";

describe.each<Transport>(["udp", "tcp"])("agent pair: exp2 (router1, video) over %s", (transport) => {
  const start = pairPerTest();

  it("moves the group in plan order and both sides report completion", async () => {
    const pair = await start(
      await guestDefs([
        ["video", "server"],
        ["router1", "router"],
      ]),
      { transport },
    );
    await bootOnSource(pair);
    await expectAllOn(pair, "dc1");
    const started: string[] = [];
    const summary = await move(pair, { vms: ["video", "router1"], events: { onStart: (vm) => started.push(vm) } });
    expect(started).toEqual(["router1", "video"]); // network function first
    expect(summary.outcome).toBe("completed");
    expect(summary.vms.map((v) => [v.vm, v.state])).toEqual([
      ["video", "completed"],
      ["router1", "completed"],
    ]);
    for (const v of summary.vms) {
      expect(v.totalMs).toBeGreaterThan(0);
      expect(v.transferredBytes).toBeGreaterThan(1 << 20);
    }
    expect(summary.destinationReport?.outcome).toBe("completed");
    expect(summary.destinationReport?.results.every((r) => r.host === "dc2")).toBe(true);
    await expectAllOn(pair, "dc2");
    // UDP retransmissions (a loaded machine answers 100 Trying after Timer A) count once
    const labels = ladderSteps(pair.dc1.trace)
      .map((s) => s.label.replace(/ \[.*\]$/, ""))
      .filter((l, i, all) => l !== all[i - 1]);
    // drachtio-server absorbs the 100 Trying (hop by hop): a drachtio app never sees it
    const expected = ["INVITE", "100 Trying (INVITE)", "200 OK (INVITE)", "ACK"].filter(
      (l) => pair.backend.dc1 !== "drachtio" || l !== "100 Trying (INVITE)",
    );
    expect(labels.slice(0, expected.length)).toEqual(expected);
    expect(labels).toContain("INFO");
    expect(labels.slice(-2)).toEqual(["BYE", "200 OK (BYE)"]);
    expect(placement(pair)).toEqual({ video: ["dc2"], router1: ["dc2"] });
  });
});

// exp2 above proves each transport; the larger groups run once each, exp1 over UDP and exp3 over TCP
describe("agent pair: exp1 over udp, exp3 over tcp", () => {
  const start = pairPerTest();

  it("exp1 (two routers) in parallel", async () => {
    const transport: Transport = "udp";
    const pair = await start(
      await guestDefs([
        ["router1", "router"],
        ["router2", "router"],
      ]),
      { transport },
    );
    await bootOnSource(pair);
    let running = 0;
    let peak = 0;
    const summary = await move(pair, {
      vms: ["router1", "router2"],
      policy: { ...SEQUENTIAL, strategy: "parallel", maxParallel: 2 },
      events: { onStart: () => (peak = Math.max(peak, ++running)), onOutcome: () => running-- },
    });
    expect(peak).toBe(2);
    expect(summary.outcome).toBe("completed");
    await expectAllOn(pair, "dc2");
  });

  it("exp3 (edge network) with switchover: the group pre-copies, then switches over together", async () => {
    const transport: Transport = "tcp";
    const pair = await start(
      await guestDefs([
        ["firewall", "firewall"],
        ["router-switch", "router"],
        ["storage", "storage"],
        ["web", "server"],
      ]),
      { transport },
    );
    await bootOnSource(pair);
    const events: string[] = [];
    const summary = await move(pair, {
      vms: ["web", "storage", "router-switch", "firewall"],
      policy: { ...SEQUENTIAL, strategy: "switchover", maxParallel: 4 },
      events: {
        onSwitchover: (vms) => events.push(`switch ${[...vms].sort().join("+")}`),
        onOutcome: (o) => events.push(`${o.state} ${o.vm}`),
      },
    });
    expect(summary.vms.filter((v) => v.reason).map((v) => `${v.vm}: ${v.reason}`)).toEqual([]);
    expect(summary.outcome).toBe("completed");
    // one switchover for the whole group. The order outcomes are reported in is not the resume order
    // (a VM's outcome also waits for its source QEMU to quit): test/testbed/switchover.test.ts checks
    // from the guests' STOP/RESUME that the network functions resume on dc2 before the servers.
    expect(events[0]).toBe("switch firewall+router-switch+storage+web");
    expect(events.slice(1).sort()).toEqual(
      ["firewall", "router-switch", "storage", "web"].map((v) => `completed ${v}`),
    );
    // the group's pause covers every VM's own downtime, and QEMU was told a share of the limit each
    const downtimes = summary.vms.map((v) => v.downtimeMs as number);
    expect(summary.groupDowntimeMs).toBeGreaterThanOrEqual(Math.max(...downtimes));
    expect(formatSummary(summary)).toContain(`group downtime ${summary.groupDowntimeMs} ms`);
    await expectAllOn(pair, "dc2");
  });
});
