/**
 * Group page dedup over SIP with real QEMU (nrdl/SPEC.md 5.8): a switchover group offered with
 * commit="group" and dedup="on" is armed with `<armed dedup="on">` for each VM, and moves through
 * the dedup relays with one index for the dialog at each end. The guests fill memory with 4 MiB
 * that every guest holds alike and 1 MiB of their own (st.fill): what the second guest holds alike
 * crosses as references, and each guest's memory reads back whole at the destination. A
 * destination that keeps no index (migration.dedupIndexPages 0) answers without dedup, and a
 * group (of one, to keep the file short) moves over the plain stream.
 */
import { Writable } from "node:stream";
import winston from "winston";
import { formatSummary } from "../../agents/source/progress-display";
import { QemuDriver } from "../../lib/hypervisor/qemu";
import type { MigrateSummary } from "../../agents/source/types";
import type { Answer, Policy } from "../../nrdl/types";
import type { Host } from "../../lib/hypervisor/host";
import {
  configFile,
  expectOneHostEach,
  extraDestination,
  guestDefs,
  refusal,
  SEQUENTIAL,
  startPair,
  type Pair,
} from "../harness";
import { fillSum } from "../dedup/fill";
import { ensureBuilt, runCli } from "./cli-process";

jest.setTimeout(60_000);

const DEDUPED = ["dd1", "dd2"];
const REFUSED = ["dr1"];
const FRAMES_AS_THEY_ARE = ["df1"];
// a group commit: the destination holds the arrivals and decides the group (SPEC.md 5.6)
const GROUP: Policy = { ...SEQUENTIAL, strategy: "switchover", maxParallel: 2 };

let pair: Pair;
/** What both agents logged, as JSON objects. */
const logged: Array<Record<string, unknown>> = [];
const logger = winston.createLogger({
  level: "info",
  format: winston.format.json(),
  transports: [
    new winston.transports.Stream({
      stream: new Writable({
        write(chunk: Buffer, _enc, next) {
          logged.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
          next();
        },
      }),
    }),
  ],
});
/** Each guest's FILL sum, written at dc1 before it moves. */
const sums = new Map<string, string>();

function qemuOf(host: Host, vm: string): QemuDriver {
  const driver = host.find(vm)?.driver;
  if (!(driver instanceof QemuDriver)) throw new Error(`${vm} is no QEMU VM here`);
  return driver;
}

beforeAll(async () => {
  ensureBuilt();
  const names = [...DEDUPED, ...REFUSED, ...FRAMES_AS_THEY_ARE];
  const defs = (await guestDefs(names.map((n) => [n, "server"]))).map((d) => ({
    ...d,
    append: `${d.append ?? ""} st.fill=4,1`,
  }));
  pair = await startPair(defs, { logger });
  await Promise.all(defs.map((d) => qemuOf(pair.dc1.host, d.name).start(d.name)));
  const filled = await Promise.all(defs.map((d) => fillSum(qemuOf(pair.dc1.host, d.name), d.name, "FILL")));
  defs.forEach((d, i) => sums.set(d.name, filled[i]));
});

afterAll(async () => {
  await pair?.close();
});

/** Move `vms` as one group with --dedup on; the answer and the summary. */
async function moveGroup(to: string, vms: string[]): Promise<{ answer: Answer; summary: MigrateSummary }> {
  let answer: Answer | undefined;
  const summary = await pair.dc1.agent.migrate(
    { to, vms, policy: GROUP, dedup: "on" },
    { onAnswer: (a) => (answer = a) },
  );
  if (!answer) throw new Error("no answer");
  return { answer, summary };
}

/** Each VM runs at `host` only (stopped at dc1), with the memory it had at dc1. */
async function expectArrivedWhole(host: Host, vms: string[]): Promise<void> {
  for (const vm of vms) {
    expect(await host.find(vm)?.driver.state(vm)).toBe("running");
    expect(await pair.dc1.host.find(vm)?.driver.state(vm)).not.toBe("running");
    expect(await fillSum(qemuOf(host, vm), vm, "FILL-CHECK")).toBe(sums.get(vm));
  }
}

test("--dedup on without a group commit is a usage error (the CLI exits 2), and nothing is sent", async () => {
  const cli = runCli(["migrate", "-c", configFile(pair, "dc1"), "--to", pair.dc2.uri, "--dedup", "on", DEDUPED[0]]);
  expect(await cli.exited).toBe(2);
  expect(cli.output()).toContain('dedup on: it needs a group commit (commit="group")');
  expect(pair.dc2.trace.filter((e) => e.message.startsWith("INVITE "))).toEqual([]);
  expect(await pair.dc1.host.find(DEDUPED[0])?.driver.state(DEDUPED[0])).toBe("running");
  // a plan file's own dedup="on" is checked the same way
  const offer = await pair.dc1.agent.buildOffer({ to: pair.dc2.uri, vms: [DEDUPED[0]], policy: SEQUENTIAL });
  const plan = { ...offer, policy: { ...offer.policy, dedup: "on" as const } };
  const e = await refusal(pair.dc1.agent.call({ to: pair.dc2.uri, plan }));
  expect([e.status, e.details]).toEqual([400, [expect.stringMatching(/^dedup on: it needs a group commit/)]]);
  expect(pair.dc2.trace.filter((t) => t.message.startsWith("INVITE "))).toEqual([]);
});

test('dedup on: each VM is armed dedup="on", the pages alike cross as references, memory arrives whole', async () => {
  const { answer, summary } = await moveGroup(pair.dc2.uri, DEDUPED);
  expect(answer.commit).toBe("group");
  expect(answer.dedupPages).toBe(65_536);
  expect(answer.dedupLink).toBe("deflate"); // offered by the source, wanted by default (dedupDeflate)
  for (const vm of DEDUPED) expect(answer.armed.find((a) => a.vm === vm)?.dedup).toBe("on");
  expect(summary.outcome).toBe("completed");
  expectOneHostEach(pair);
  await expectArrivedWhole(pair.dc2.host, DEDUPED);
  const stats = summary.dedup;
  if (!stats) throw new Error("no dedup stats in the summary");
  // at least the 4 MiB the second guest holds alike with the first went as references
  expect(stats.hits).toBeGreaterThan(1024);
  expect(stats.stored).toBeLessThanOrEqual(stats.capPages);
  expect(stats.bytesOut).toBeLessThan(stats.bytesIn);
  // and the frames deflated on the link: patterns and kernel pages shrink well
  expect(stats.linkBytes).toBeGreaterThan(0);
  expect(stats.linkBytes).toBeLessThan(0.7 * stats.bytesOut);
  expect(formatSummary(summary)).toContain(`group dedup: ${stats.hits} of ${stats.pages} pages sent as references`);
  // the destination's half of the index, logged when the dialog ended: the same hits, every stored page held whole
  const index = logged.filter((l) => l.message === "dedup index of the dialog");
  expect(index.find((l) => l.agent === "destination")).toMatchObject({
    hits: stats.hits,
    stored: stats.stored,
    indexBytes: stats.stored * 4096,
  });
  expect(index.find((l) => l.agent === "source")).toMatchObject({ hits: stats.hits, indexBytes: stats.stored * 32 });
});

test("a destination that keeps no dedup index answers without it: the group moves over the plain stream", async () => {
  const dc3 = await extraDestination(pair, "dc3", { config: { migration: { dedupIndexPages: 0 } } });
  try {
    const { answer, summary } = await moveGroup(dc3.uri, REFUSED);
    expect(answer.commit).toBe("group");
    expect(answer.dedupPages).toBeUndefined();
    expect(answer.armed.map((a) => a.dedup)).toEqual([undefined]);
    expect(summary.outcome).toBe("completed");
    expect(summary.dedup).toBeUndefined();
    await expectArrivedWhole(dc3.host, REFUSED);
  } finally {
    await dc3.stop();
  }
});

test("a destination that wants no deflate answers dedup without dedup-link: the frames cross as they are", async () => {
  const dc3 = await extraDestination(pair, "dc3", { config: { migration: { dedupDeflate: false } } });
  try {
    const { answer, summary } = await moveGroup(dc3.uri, FRAMES_AS_THEY_ARE);
    expect(answer.armed.map((a) => a.dedup)).toEqual(["on"]);
    expect(answer.dedupLink).toBeUndefined();
    expect(summary.outcome).toBe("completed");
    expect(summary.dedup?.linkBytes).toBe(summary.dedup?.bytesOut);
    await expectArrivedWhole(dc3.host, FRAMES_AS_THEY_ARE);
  } finally {
    await dc3.stop();
  }
});
