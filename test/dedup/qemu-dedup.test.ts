/**
 * Group page dedup with real QEMU between two run dirs on loopback (SPEC.md 5.8): guests that
 * filled memory with patterns, much of it alike across them, move over the TLS-PSK relays with
 * one dialog's index; each one's memory reads back as it was written, and the link carried less
 * than QEMU sent. A forged reference fails that VM's migration: it runs on at the source and
 * nothing of it is left at the destination.
 */
import fs from "node:fs";
import crypto from "node:crypto";
import { SentPages } from "../../lib/dedup/encoder";
import { FRAME, frame } from "../../lib/dedup/frames";
import { DedupRebuilder } from "../../lib/dedup/rebuild";
import type { MigrationOptions } from "../../lib/hypervisor/driver";
import type { QemuDriver } from "../../lib/hypervisor/qemu";
import { ensureGuest, guestVm } from "../../lib/guest/guest";
import { hostsRunning, makeHosts, rejection, tearDown, type Hosts } from "../harness/hosts";

jest.setTimeout(60_000);

const SECRET = "dedup-one-time-secret";
const CAP = 65_536;
// dedup moves are group commits: the source's copy waits paused for the destination's word
const opts: MigrationOptions = { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 30, awaitCommit: true };

let hosts: Hosts;

/** The SUM of the first line of `kind` ("FILL" or "FILL-CHECK") this VM printed after `from` bytes. */
async function fillSum(driver: QemuDriver, vm: string, kind: string, from = 0, timeoutMs = 30_000): Promise<string> {
  const re = new RegExp(`${kind} ${vm} ([0-9a-f]{32})`);
  let log = "";
  for (const end = Date.now() + timeoutMs; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
    log = fs.existsSync(driver.files(vm).serial) ? fs.readFileSync(driver.files(vm).serial, "utf8") : "";
    const m = re.exec(log.slice(from));
    if (m) return m[1];
  }
  throw new Error(`no ${kind} line of ${vm} within ${timeoutMs} ms: ${log.slice(-300)}`);
}

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

test("three guests move with one dialog's dedup index; memory reads back whole; the link carries less", async () => {
  const names = ["vm1", "vm2", "vm3"];
  const sums = await startFilled(names);
  expect(new Set(sums.values()).size).toBe(3); // each guest's own part differs
  const index = new DedupRebuilder(CAP);
  const pages = new SentPages(CAP);
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
  expect(pages.stats.hits).toBeGreaterThan(2 * 1024); // at least the 4 MiB the 2nd and 3rd guests share
  expect(index.stats.hits).toBe(pages.stats.hits);
  expect(pages.stats.bytesOut).toBeLessThan(0.8 * pages.stats.bytesIn);
});

/** A source that, after `after` pages, sends a reference to a page nobody ever sent. */
class ForgingPages extends SentPages {
  constructor(private after: number) {
    super(CAP);
  }
  override pageFrame(page: Buffer): Buffer {
    if (--this.after === 0) return frame(FRAME.ref, crypto.randomBytes(32));
    return super.pageFrame(page);
  }
}

test("without group commit: refused; a forged reference: the VM runs on at the source, nothing left here", async () => {
  await startFilled(["vm1"]);
  const index = new DedupRebuilder(CAP, 300);
  const index0 = new SentPages(CAP);
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET, dedup: index });
  const target = { uri: armed.uri, secret: SECRET };
  const plain = await rejection(hosts.dc1.migrate("vm1", target, { ...opts, awaitCommit: false, dedup: index0 }).done);
  expect(plain).toMatchObject({ status: 488 });
  const err = await rejection(hosts.dc1.migrate("vm1", target, { ...opts, dedup: new ForgingPages(5000) }).done);
  expect(err.status).toBeGreaterThanOrEqual(500);
  expect(await hosts.dc1.state("vm1")).toBe("running");
  await hosts.dc2.disarm("vm1").catch(() => undefined); // the incoming QEMU may have quit on its own already
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc1"]);
  expect(fs.readdirSync(hosts.dirs.dc2).filter((f) => !f.endsWith(".log"))).toEqual([]);
});
