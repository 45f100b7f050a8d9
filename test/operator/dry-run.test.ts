/**
 * Ask first: `migrate --dry-run` against a real destination agent, with real QEMU guests running at
 * the source. The destination runs the INVITE's own checks and answers what it would arm or refuse;
 * nothing is armed, started or written on either side (processes and files listed before and after),
 * and a real migration afterwards goes exactly as the dry run said.
 */
import { dryRun } from "../../agents/source/dry-run";
import type { Offer } from "../../nrdl/types";
import { runCli } from "../e2e/cli-process";
import { bootOnSource, configFile, expectAllOn, type Pair } from "../harness";
import { exp2Pair } from "./exp2-pair";
import { filesUnder, processesMentioning } from "./snapshot";

jest.setTimeout(120_000);

let pair: Pair;

beforeAll(async () => {
  pair = await exp2Pair();
  await bootOnSource(pair);
});
afterAll(() => pair?.close());

const snapshot = () => ({ processes: processesMentioning(pair.base), files: filesUnder(pair.base) });

async function offerOf(vms: string[]): Promise<Offer> {
  const policy = { strategy: "sequential", maxParallel: 1, bandwidthMbps: 100, downtimeLimitMs: 300 } as const;
  return pair.dc1.agent.buildOffer({
    to: pair.dc2.uri,
    vms,
    policy: { ...policy, timeoutS: 120, onError: "abort" },
  });
}

test("the CLI's dry run prints the plan and the destination's verdict, and changes nothing", async () => {
  const config = configFile(pair, "dc1");
  const before = snapshot();
  expect(before.processes).toHaveLength(2); // the two guests at the source
  const cli = runCli([
    "migrate",
    "--dry-run",
    "-c",
    config,
    "--to",
    pair.dc2.uri,
    "--bandwidth-mbps",
    "100",
    "router1",
    "video",
  ]);
  expect(await cli.exited).toBe(0);
  const out = cli.output();
  expect(out).toContain("would accept the offer (200 OK); nothing was armed or moved");
  expect(out).toContain("strategy sequential, max parallel 1");
  expect(out).toMatch(/wave 1: router1 \(one at a time\)\nwave 2: video \(one at a time\)/);
  // 96 MiB at 100 Mbit/s, one pass plus 10 %: 96 * 2^20 * 8 * 1.1 / 1e8 = 8.9 s each. The cap makes the
  // source offer compression (nrdl/SPEC.md 5.7): zstd carries 0.39x on the link (96 * 1.1 * 0.39 = 41 MiB),
  // in the same time, as QEMU 7.2 counts the cap before multifd compresses
  expect(out).toMatch(
    /^1\s+router1\s+96 MiB\s+~8\.9 s\s+<= 300 ms\s+zstd ~41 MiB\s+would arm tcp:127\.0\.0\.1:\d+ with zstd$/m,
  );
  expect(out).toMatch(
    /^2\s+video\s+96 MiB\s+~8\.9 s\s+<= 300 ms\s+zstd ~41 MiB\s+would arm tcp:127\.0\.0\.1:\d+ with zstd$/m,
  );
  expect(out).toContain("compressed streams assume 0.39x of the memory on the link");
  expect(out).toContain("estimated total ~18 s at 100 Mbit/s per migration (the cap)");
  // --compress none: nothing offered, the plain stream's bytes (96 * 1.1 = 106 MiB); uncapped, 1 Gbit/s assumed
  const plain = runCli(["migrate", "--dry-run", "-c", config, "--to", pair.dc2.uri, "--compress", "none", "router1"]);
  expect(await plain.exited).toBe(0);
  expect(plain.output()).toMatch(/^1\s+router1\s+96 MiB\s+~0\.9 s\s+<= 300 ms\s+plain ~106 MiB\s+would arm tcp:\S+$/m);
  expect(snapshot()).toEqual(before);
  await expectAllOn(pair, "dc1");
});

test("a capped switchover asks as the INVITE would: group commit, so dedup auto is agreed, with xbzrle", async () => {
  const before = snapshot();
  const config = configFile(pair, "dc1");
  const args = ["--to", pair.dc2.uri, "--strategy", "switchover", "--bandwidth-mbps", "100", "router1", "video"];
  const cli = runCli(["migrate", "--dry-run", "-c", config, ...args]);
  expect(await cli.exited).toBe(0);
  expect(cli.output()).toContain("group dedup: negotiated for router1, video");
  expect(cli.output()).toMatch(/^1\s+router1\s+.*would arm tcp:\S+ with xbzrle$/m);
  // a destination without an index refuses it; the dry run says so
  const pages = pair.dc2.cfg.migration.dedupIndexPages;
  pair.dc2.cfg.migration.dedupIndexPages = 0;
  try {
    const refused = runCli(["migrate", "--dry-run", "-c", config, "--dedup", "on", ...args]);
    expect(await refused.exited).toBe(0);
    expect(refused.output()).toContain("group dedup: offered, refused by the destination");
    expect(refused.output()).toMatch(/^1\s+router1\s+.*would arm tcp:\S+ with zstd$/m);
  } finally {
    pair.dc2.cfg.migration.dedupIndexPages = pages;
  }
  expect(snapshot()).toEqual(before);
});

test("refusals come with the status an INVITE would get, and still change nothing", async () => {
  const before = snapshot();
  // a VM the destination does not define: 488 with the reason per VM
  const ghost = await offerOf(["router1"]);
  ghost.vms.push({ ...ghost.vms[0], name: "ghost" });
  const undefinedVm = await dryRun(pair.dc1.sip, pair.dc2.uri, ghost);
  expect(undefinedVm.status).toBe(488);
  expect(undefinedVm.preview?.rejected).toEqual([{ vm: "ghost", reason: "not defined on this host" }]);
  expect(undefinedVm.preview?.accepted.map((a) => a.vm)).toEqual(["router1"]);

  // not enough memory at the destination once its reserve is counted
  const reserve = pair.dc2.cfg.migration.memoryReserveMib;
  pair.dc2.cfg.migration.memoryReserveMib = 64 * 1024 * 1024;
  try {
    const short = await dryRun(pair.dc1.sip, pair.dc2.uri, await offerOf(["router1", "video"]));
    expect(short.status).toBe(488);
    expect(short.preview?.rejected.map((r) => r.vm)).toEqual(["router1", "video"]);
    expect(short.preview?.rejected[0].reason).toMatch(
      /^not enough memory: the offer needs 192 MiB plus 67108864 MiB reserve, \d+ MiB available$/,
    );
    // the INVITE is refused for the same reason (one check, two callers)
    await expect(
      pair.dc1.agent.migrate({ to: pair.dc2.uri, plan: await offerOf(["router1", "video"]) }),
    ).rejects.toMatchObject({
      status: 488,
      details: [expect.stringContaining("router1: not enough memory: the offer needs 192 MiB")],
    });
  } finally {
    pair.dc2.cfg.migration.memoryReserveMib = reserve;
  }
  expect(snapshot()).toEqual(before);
});

test("a VM held by an open dialog: the dry run gets 486 like a second INVITE; then the real move", async () => {
  const call = await pair.dc1.agent.call({ to: pair.dc2.uri, plan: await offerOf(["router1"]) });
  try {
    const busy = await dryRun(pair.dc1.sip, pair.dc2.uri, await offerOf(["router1", "video"]));
    expect(busy.status).toBe(486);
    expect(busy.warning).toContain("router1 is being moved by another dialog");
  } finally {
    await call.bye();
  }
  const ok = await dryRun(pair.dc1.sip, pair.dc2.uri, await offerOf(["router1", "video"]));
  expect(ok.status).toBe(200);
  const moved = await pair.dc1.agent.migrate({ to: pair.dc2.uri, plan: await offerOf(["router1", "video"]) });
  expect(moved.outcome).toBe("completed");
  await expectAllOn(pair, "dc2");
});
