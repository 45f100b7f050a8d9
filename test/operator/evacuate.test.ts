/**
 * Evacuate across several destinations, for real: dc1 runs router1 and video (tied by exp2's
 * depends-on) and solo. dc4 advertises the most room but is busy (it takes one offer from us per
 * 10 s): it answers the dry run and refuses the INVITE with 503, so it gets nothing. dc3 comes
 * next but was provisioned with solo at another size: it refuses solo (488, definition differs)
 * and takes the router1+video group; solo goes to the next destination, dc2, in a dialog running
 * alongside. `sip-teleport evacuate` runs as its own process; at the end every VM runs on exactly
 * one of the four hosts.
 */
import fs from "node:fs";
import path from "node:path";
import type { EvacuationReport } from "../../agents/source/evacuate";
import { livePid } from "../../lib/hypervisor/pidfile";
import { buildNrdl, exampleOffer } from "../../nrdl";
import { ensureBuilt, runCli } from "../e2e/cli-process";
import {
  bootOnSource,
  configFile,
  extraDestination,
  guestDefs,
  startPair,
  type ExtraDestination,
  type Pair,
} from "../harness";

jest.setTimeout(90_000);

let pair: Pair;
let dc3: ExtraDestination;
let dc4: ExtraDestination;

beforeAll(async () => {
  ensureBuilt();
  const defs = await guestDefs([
    ["router1", "router"],
    ["video", "server"],
    ["solo", "server"],
  ]);
  // Memory kept in reserve orders the destinations by free memory: dc4 (none), dc3 (1 GiB), dc2 (4 GiB).
  pair = await startPair(defs, { dc2: { migration: { memoryReserveMib: 4096 } } });
  dc3 = await extraDestination(pair, "dc3", {
    defs: defs.map((d) => (d.name === "solo" ? { ...d, memoryMib: 128 } : d)),
    config: { migration: { memoryReserveMib: 1024 } },
  });
  dc4 = await extraDestination(pair, "dc4", {
    config: { migration: { memoryReserveMib: 0 }, limits: { invitesPerSecond: 0.1 } },
  });
  await bootOnSource(pair);
});

afterAll(async () => {
  await dc4?.stop();
  await dc3?.stop();
  await pair?.close();
});

/** Run dirs where each VM has a live QEMU: the invariant wants exactly one per VM. */
function where(): Record<string, string[]> {
  const dirs = { dc1: pair.dc1.runDir, dc2: pair.dc2.runDir, dc3: dc3.runDir, dc4: dc4.runDir };
  return Object.fromEntries(
    pair.defs.map((d) => [
      d.name,
      Object.entries(dirs)
        .filter(([, dir]) => livePid(path.join(dir, `${d.name}.pid`)) !== undefined)
        .map(([h]) => h),
    ]),
  );
}

test("refused VMs go to the next destination, groups stay together, every VM ends on exactly one host", async () => {
  const plan = path.join(pair.base, "exp2.xml");
  fs.writeFileSync(plan, buildNrdl(exampleOffer("exp2")));
  const config = configFile(pair, "dc1");
  const cli = runCli([
    "evacuate",
    "-c",
    config,
    "--plan",
    plan,
    ...["--to", dc3.uri, "--to", pair.dc2.uri, "--to", dc4.uri],
    "--json",
  ]);
  const code = await cli.exited;
  const lines = cli
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { event: string } & Record<string, unknown>);
  expect({ code, output: code === 0 ? "" : cli.output() }).toEqual({ code: 0, output: "" });

  // dc4 was offered everything and refused the INVITE; dc3 everything next, and it refused solo alone
  const offers = lines.filter((l) => l.event === "offer").map((l) => [l.to, l.vms]);
  const all = ["router1", "video", "solo"];
  expect(offers.slice(0, 2)).toEqual([
    [dc4.uri, all],
    [dc3.uri, all],
  ]);
  expect(offers.slice(2)).toEqual(
    expect.arrayContaining([
      [dc3.uri, ["router1", "video"]],
      [pair.dc2.uri, ["solo"]],
    ]),
  );
  expect(offers).toHaveLength(4);
  const refusals = lines.filter((l) => l.event === "refused");
  expect(refusals.map((l) => [l.to, l.vms])).toEqual([
    [dc4.uri, all],
    [dc3.uri, ["solo"]],
  ]);
  expect(refusals[0].why).toMatch(/^INVITE refused: 503 Service Unavailable: .*more than 0\.1 INVITEs per second from/);
  expect(refusals[1].why).toMatch(
    /^488 Not Acceptable Here: definition differs: memory 96 MiB offered, 128 MiB defined/,
  );

  const report = lines.at(-1) as unknown as EvacuationReport & { event: string };
  expect(report.event).toBe("evacuated");
  expect(report.outcome).toBe("completed");
  const table = Object.fromEntries(report.vms.map((v) => [v.vm, [v.state, v.host, v.runsOn]]));
  expect(table).toEqual({
    router1: ["moved", "dc3", dc3.uri],
    video: ["moved", "dc3", dc3.uri],
    solo: ["moved", "dc2", pair.dc2.uri],
  });
  expect(report.vms.find((v) => v.vm === "solo")?.attempts).toEqual([
    expect.stringMatching(/^sip:dc4@.*: INVITE refused: 503 /),
    expect.stringMatching(/^sip:dc3@.*: 488 /),
  ]);
  expect(report.destinations.map((d) => [d.uri, d.dialogs, d.received, d.dropped?.slice(0, 19)])).toEqual([
    [dc3.uri, 2, ["router1", "video"], undefined],
    [pair.dc2.uri, 1, ["solo"], undefined],
    [dc4.uri, 1, [], "INVITE refused: 503"],
  ]);
  // where the report says they run is where they run, and nowhere else
  expect(where()).toEqual({ router1: ["dc3"], video: ["dc3"], solo: ["dc2"] });
  for (const [vm, host] of [
    ["router1", dc3.host],
    ["solo", pair.dc2.host],
  ] as const)
    expect(await host.find(vm)?.driver.state(vm)).toBe("running");
});

test("with nothing left to move it says so, and the table lists every VM with where it runs", async () => {
  const cli = runCli(["evacuate", "-c", configFile(pair, "dc1"), "--to", pair.dc2.uri]);
  expect(await cli.exited).toBe(0);
  const out = cli.output();
  expect(out).toMatch(/^VM\s+runs on\s+outcome\s+downtime\s+note$/m);
  expect(out).toMatch(/^solo\s+dc1 \(this host\)\s+not running\s+-\s+absent here, not moved$/m);
  expect(out).toContain("evacuation completed: 0 of 0 running VMs moved off dc1");
  expect(where()).toEqual({ router1: ["dc3"], video: ["dc3"], solo: ["dc2"] });
});

test("a destination outside security.destinations is refused before anything is sent", async () => {
  const cli = runCli(["evacuate", "-c", configFile(pair, "dc1"), "--to", pair.dc2.uri, "--to", "sip:dc9@192.0.2.66"]);
  expect(await cli.exited).toBe(2);
  expect(cli.output()).toContain("sip-teleport: 403 destination not permitted");
  expect(cli.output()).toContain("sip:dc9@192.0.2.66 is not a permitted destination");
  expect(cli.output()).not.toContain("offering");
});
