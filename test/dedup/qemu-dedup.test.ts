/**
 * Group page dedup with real QEMU between two run dirs on loopback (SPEC.md 5.8): guests that
 * filled memory with patterns, much of it alike across them, move over the TLS-PSK relays with
 * one dialog's index; each one's memory reads back as it was written, and the link carried less
 * than QEMU sent (the faults: qemu-dedup-faults.test.ts).
 */
import { SentPages } from "../../lib/dedup/encoder";
import { DedupRebuilder } from "../../lib/dedup/rebuild";
import type { MigrationOptions } from "../../lib/hypervisor/driver";
import { fillSum } from "./fill";
import { ensureGuest, guestVm } from "../../lib/guest/guest";
import { hostsRunning, makeHosts, tearDown, type Hosts } from "../harness/hosts";

jest.setTimeout(60_000);

const SECRET = "dedup-one-time-secret";
const CAP = 65_536;
// dedup moves are group commits: the source's copy waits paused for the destination's word
const opts: MigrationOptions = { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 30, awaitCommit: true };

let hosts: Hosts;

async function startFilled(names: string[]): Promise<Map<string, string>> {
  const guest = await ensureGuest();
  // 4 MiB alike in every guest, 1 MiB of each one's own
  hosts = makeHosts(names.map((n) => ({ ...guestVm(guest, n), append: `${guestVm(guest, n).append} st.fill=4,1` })));
  await Promise.all(names.map((n) => hosts.dc1.start(n)));
  const sums = new Map<string, string>();
  for (const n of names) sums.set(n, await fillSum(hosts.dc1, n, "FILL"));
  return sums;
}

afterEach(async () => {
  await tearDown(hosts);
});

/** `names` move at once with one dialog's index; each one's memory reads back as filled, at dc2 only. */
async function moveFilled(names: string[], sums: Map<string, string>, index: DedupRebuilder, pages: SentPages) {
  const armed = await Promise.all(
    names.map((n) => hosts.dc2.arm(n, { address: "127.0.0.1", secret: SECRET, dedup: index })),
  );
  await Promise.all(
    names.map((n, i) => hosts.dc1.migrate(n, { uri: armed[i].uri, secret: SECRET }, { ...opts, dedup: pages }).done),
  );
  for (const n of names) await hosts.dc2.waitResumed(n, 10_000);
  for (const n of names) {
    expect(await fillSum(hosts.dc2, n, "FILL-CHECK")).toBe(sums.get(n));
    await hosts.dc1.stop(n); // the group's commit: the source's paused copy goes
    expect(hostsRunning(hosts, n)).toEqual(["dc2"]);
  }
}

test("three guests move with one dialog's dedup index; memory reads back whole; the link carries less", async () => {
  const names = ["vm1", "vm2", "vm3"];
  const sums = await startFilled(names);
  expect(new Set(sums.values()).size).toBe(3); // each guest's own part differs
  const index = new DedupRebuilder(CAP);
  const pages = new SentPages(CAP);
  await moveFilled(names, sums, index, pages);
  expect(pages.stats.hits).toBeGreaterThan(2 * 1024); // at least the 4 MiB the 2nd and 3rd guests share
  expect(index.stats.hits).toBe(pages.stats.hits);
  expect(pages.stats.bytesOut).toBeLessThan(0.8 * pages.stats.bytesIn);
  expect(pages.stats.linkBytes).toBe(pages.stats.bytesOut); // not deflated
});

test("deflated dedup link: two guests move, memory reads back whole, the link carries under the frames", async () => {
  const names = ["vm1", "vm2"];
  const sums = await startFilled(names);
  const pages = new SentPages(CAP, true);
  await moveFilled(names, sums, new DedupRebuilder(CAP, 10_000, true), pages);
  expect(pages.stats.hits).toBeGreaterThan(1024); // the 4 MiB the second guest shares with the first
  // the patterns and the kernel's pages deflate: the link carries well under the frames' bytes
  expect(pages.stats.linkBytes).toBeGreaterThan(0);
  expect(pages.stats.linkBytes).toBeLessThan(0.7 * pages.stats.bytesOut);
  console.log(
    `deflated dedup: QEMU ${pages.stats.bytesIn} bytes, frames ${pages.stats.bytesOut}, link ${pages.stats.linkBytes}`,
  );
});
