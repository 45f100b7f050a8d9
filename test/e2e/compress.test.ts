/**
 * Per-stream compression over SIP with real QEMU (nrdl/SPEC.md 5.7): the offer lists the methods,
 * the destination arms the VM's listener for the one it takes, and the source's QEMU migrates with
 * it under the dialog's TLS-PSK. Each guest runs the memory writer (st.dirty), whose pass counter
 * lives in guest memory: at the destination it goes on from where it was, so the guest runs there
 * with its memory intact. What each QEMU was told is read back from QEMU itself
 * (query-migrate-capabilities / -parameters): on the source just before `migrate`, on the
 * destination after the VM arrived; the plain stream reads multifd and xbzrle off.
 */
import path from "node:path";
import { livePid } from "../../lib/hypervisor/pidfile";
import { DestinationAgent } from "../../agents/destination/agent";
import { TeleportError } from "../../lib/errors";
import type { IncomingRequest } from "../../lib/sip/backend";
import type { Answer } from "../../nrdl/types";
import type { CompressChoice } from "../../lib/plan/compress";
import { QmpClient } from "../../lib/hypervisor/qmp";
import { configFile, expectOneHostEach, guestDefs, SEQUENTIAL, startPair, writerPasses, type Pair } from "../harness";
import { until } from "../security/fault-report";
import { ensureBuilt, runCli } from "./cli-process";

jest.setTimeout(120_000);

const ZSTD = "cz1";
const XBZRLE = "cx1";
const PLAIN = "cp1";
const OLDER = "co1";
const KILLED = "ck1";
const GROUP = ["cs1", "cs2"];
const BY_CLI = "cc1";

let pair: Pair;

interface Told {
  multifd: boolean;
  xbzrle: boolean;
  compression: string;
  channels: number;
  cacheBytes: number;
}

/** What the source's QEMUs were told, read from QEMU on the connection that sends `migrate`. */
const sourceTold = new Map<string, Told>();
const execute = QmpClient.prototype.execute;

async function told(mon: QmpClient): Promise<Told> {
  const caps = await execute.call(mon, "query-migrate-capabilities");
  const params = await execute.call(mon, "query-migrate-parameters");
  const on = (name: string) =>
    (caps as Array<{ capability: string; state: boolean }>).some((c) => c.capability === name && c.state);
  const p = params as Record<string, unknown>;
  return {
    multifd: on("multifd"),
    xbzrle: on("xbzrle"),
    compression: String(p["multifd-compression"]),
    channels: Number(p["multifd-channels"]),
    cacheBytes: Number(p["xbzrle-cache-size"]),
  };
}

const passes = (host: "dc1" | "dc2", vm: string) => writerPasses(pair[host].runDir, vm);

beforeAll(async () => {
  ensureBuilt();
  const defs = (
    await guestDefs([
      [ZSTD, "server"],
      [XBZRLE, "server"],
      [PLAIN, "server"],
      [OLDER, "server"],
      [KILLED, "server"],
      [GROUP[0], "router"],
      [GROUP[1], "server"],
      [BY_CLI, "server"],
    ])
  )
    // XBZRLE needs pages re-sent while it moves; the others only need a writer that proves their memory whole,
    // and eight guests writing 8 MiB/s each keep both cores busy for the whole file
    .map((d) => ({ ...d, append: `${d.append ?? ""} st.dirty=${d.name === XBZRLE ? 8 : 2}` }));
  pair = await startPair(defs);
  // the source QEMU's monitor that starts a migration: ask QEMU what it holds right before it moves
  jest.spyOn(QmpClient.prototype, "execute").mockImplementation(async function (this: QmpClient, command, ...rest) {
    if (command === "migrate") {
      const uri = String((rest[0] as { uri?: string } | undefined)?.uri);
      sourceTold.set(uri, await told(this));
    }
    return execute.call(this, command, ...rest);
  });
  await Promise.all(defs.map((d) => pair.dc1.host.find(d.name)!.driver.start(d.name)));
  await until("the guests' writers on dc1", () => defs.every((d) => passes("dc1", d.name).length >= 1), 60_000);
});

afterAll(async () => {
  jest.restoreAllMocks();
  await pair?.close();
});

/** Move one VM with `compress` and a policy; returns the VM's <armed> and what the source's QEMU held. */
async function moveWith(vm: string, compress: CompressChoice, bandwidthMbps = 0) {
  let answer: Answer | undefined;
  const before = passes("dc1", vm).at(-1) ?? 0;
  const summary = await pair.dc1.agent.migrate(
    { to: pair.dc2.uri, vms: [vm], policy: { ...SEQUENTIAL, bandwidthMbps }, compress },
    { onAnswer: (a) => (answer = a) },
  );
  expectOneHostEach(pair);
  expect(summary.outcome).toBe("completed");
  expect(await pair.dc2.host.find(vm)?.driver.state(vm)).toBe("running");
  // the guest runs at the destination with its memory: its pass counter goes on from the source's
  await until(`${vm}'s writer at dc2`, () => passes("dc2", vm).length >= 2, 30_000);
  expect(passes("dc2", vm)[0]).toBeGreaterThanOrEqual(before);
  const dc2 = passes("dc2", vm);
  expect(dc2.every((n, i) => i === 0 || n === dc2[i - 1] + 1)).toBe(true);
  const armed = answer?.armed.find((a) => a.vm === vm);
  if (!armed) throw new Error(`no <armed> for ${vm}`);
  const source = sourceTold.get(armed.uri);
  if (!source) throw new Error(`the source's QEMU never sent migrate to ${armed.uri}`);
  return { armed, source, destination: await destinationTold(vm) };
}

/** The destination QEMU, after arrival, on its short-query monitor. */
async function destinationTold(vm: string): Promise<Told> {
  const mon = await QmpClient.connect(path.join(pair.dc2.runDir, `${vm}.mon`));
  try {
    return await told(mon);
  } finally {
    await mon.close();
  }
}

test("a bandwidth cap makes the source offer zstd first; both QEMUs run multifd zstd over 2 channels", async () => {
  const { armed, source, destination } = await moveWith(ZSTD, "auto", 2000);
  expect(armed).toMatchObject({ compress: "zstd", channels: 2 });
  expect(source).toMatchObject({ multifd: true, xbzrle: false, compression: "zstd", channels: 2 });
  expect(destination).toMatchObject({ multifd: true, compression: "zstd", channels: 2 });
});

test("xbzrle asked for: the source's QEMU re-sends dirtied pages as differences, no multifd", async () => {
  const { armed, source, destination } = await moveWith(XBZRLE, "xbzrle");
  expect(armed.compress).toBe("xbzrle");
  expect(armed.channels).toBeUndefined();
  // 96 MiB guest: half its RAM rounded down to a power of two
  expect(source).toMatchObject({ multifd: false, xbzrle: true, cacheBytes: 32 * 2 ** 20 });
  expect(destination.multifd).toBe(false);
});

test("no cap and no method asked: the plain stream, as before (nothing offered, multifd and xbzrle off)", async () => {
  const { armed, source, destination } = await moveWith(PLAIN, "auto");
  expect(armed.compress).toBeUndefined();
  expect(source).toMatchObject({ multifd: false, xbzrle: false });
  expect(destination.multifd).toBe(false);
});

test("a destination from before compression refuses the attribute (400): called again without it, plain", async () => {
  // what an NRDL 2 destination from before SPEC.md 5.7 answers: its <policy> has no compress
  const older = DestinationAgent.prototype as unknown as { offerOf(req: IncomingRequest): unknown };
  const offerOf = older.offerOf;
  const invites: boolean[] = [];
  const spy = jest.spyOn(older, "offerOf").mockImplementation(function (this: unknown, req: IncomingRequest) {
    const compressed = req.body?.content.includes(" compress=") ?? false;
    invites.push(compressed);
    if (compressed)
      throw new TeleportError(400, "Invalid NRDL", [
        "/nrdl/offer/policy/@compress: unexpected attribute; <policy> takes strategy, max-parallel, " +
          "bandwidth-mbps, downtime-limit-ms, timeout-s, on-error, convergence, commit",
      ]);
    return offerOf.call(this, req);
  });
  try {
    const { armed, source, destination } = await moveWith(OLDER, "zstd");
    expect(invites).toEqual([true, false]);
    expect(armed.compress).toBeUndefined();
    expect(source).toMatchObject({ multifd: false, xbzrle: false });
    expect(destination.multifd).toBe(false);
  } finally {
    spy.mockRestore();
  }
});

test("the destination's QEMU killed mid-stream over zstd: the move fails, the guest runs on at dc1", async () => {
  let killed = false;
  // 8 Mbit/s: 96 MiB take over a minute, so the kill lands mid-stream
  const summary = await pair.dc1.agent.migrate(
    { to: pair.dc2.uri, vms: [KILLED], policy: { ...SEQUENTIAL, bandwidthMbps: 8 }, compress: "zstd" },
    {
      onStart: () =>
        void setTimeout(() => {
          const pid = livePid(path.join(pair.dc2.runDir, `${KILLED}.pid`));
          if (pid !== undefined) process.kill(pid, "SIGKILL");
          killed = pid !== undefined;
        }, 1500),
    },
  );
  expect(killed).toBe(true);
  expect(summary.outcome).toBe("failed");
  expect(summary.vms[0]).toMatchObject({ vm: KILLED, state: "failed", host: "dc1" });
  expectOneHostEach(pair);
  expect(await pair.dc1.host.find(KILLED)?.driver.state(KILLED)).toBe("running");
  const seen = passes("dc1", KILLED).length;
  await until(`${KILLED}'s writer at dc1 after the failed move`, () => passes("dc1", KILLED).length > seen, 30_000);
});

test("a capped switchover group moves over zstd, held and released together, both running at dc2", async () => {
  let answer: Answer | undefined;
  const summary = await pair.dc1.agent.migrate(
    {
      to: pair.dc2.uri,
      vms: GROUP,
      policy: { ...SEQUENTIAL, strategy: "switchover", maxParallel: 2, bandwidthMbps: 400 },
      compress: "auto",
      // a capped group commit would take dedup (and xbzrle with it) under auto: test/e2e/dedup.test.ts
      dedup: "off",
    },
    { onAnswer: (a) => (answer = a) },
  );
  expectOneHostEach(pair);
  expect(summary.outcome).toBe("completed");
  expect(summary.groupDowntimeMs).toBeGreaterThan(0);
  expect(answer?.commit).toBe("group");
  for (const vm of GROUP) {
    expect(answer?.armed.find((a) => a.vm === vm)).toMatchObject({ compress: "zstd", channels: 2 });
    expect(sourceTold.get(answer?.armed.find((a) => a.vm === vm)?.uri ?? "")).toMatchObject({ multifd: true });
    expect(await pair.dc2.host.find(vm)?.driver.state(vm)).toBe("running");
    await until(`${vm}'s writer at dc2`, () => passes("dc2", vm).length >= 2, 30_000);
  }
});

test("the CLI's --compress zlib: its progress says the stream, dc2's QEMU ran multifd zlib", async () => {
  const cli = runCli(["migrate", "-c", configFile(pair, "dc1"), "--to", pair.dc2.uri, "--compress", "zlib", BY_CLI]);
  expect(await cli.exited).toBe(0);
  expect(cli.output()).toContain(`${BY_CLI}: stream compressed: zlib over 2 multifd channels`);
  expectOneHostEach(pair);
  expect(await pair.dc2.host.find(BY_CLI)?.driver.state(BY_CLI)).toBe("running");
  expect(await destinationTold(BY_CLI)).toMatchObject({ multifd: true, compression: "zlib", channels: 2 });
  await until(`${BY_CLI}'s writer at dc2`, () => passes("dc2", BY_CLI).length >= 2, 30_000);
});
