/**
 * Group page dedup's faults with real QEMU (SPEC.md 5.8): a forged reference, and the link cut
 * mid-stream, each fail that VM's migration; it runs on at the source and nothing of it is left at
 * the destination. A dedup move without group commit is refused.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import { SentPages } from "../../lib/dedup/encoder";
import { FRAME, frame } from "../../lib/dedup/frames";
import { DedupRebuilder } from "../../lib/dedup/rebuild";
import type { MigrationOptions } from "../../lib/hypervisor/driver";
import { ensureGuest, guestVm } from "../../lib/guest/guest";
import { hostsRunning, makeHosts, rejection, tearDown, type Hosts } from "../harness/hosts";
import { fillSum } from "./fill";

jest.setTimeout(60_000);

const SECRET = "dedup-one-time-secret";
const CAP = 65_536;
const opts: MigrationOptions = { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 30, awaitCommit: true };

let hosts: Hosts;

beforeEach(async () => {
  const def = guestVm(await ensureGuest(), "vm1");
  hosts = makeHosts([{ ...def, append: `${def.append} st.fill=4,1` }]);
  await hosts.dc1.start("vm1");
  await fillSum(hosts.dc1, "vm1", "FILL");
});

afterEach(async () => {
  await tearDown(hosts);
});

/** The VM runs at the source only, and the destination's run dir holds nothing of it. */
async function stayedAtSource(): Promise<void> {
  expect(await hosts.dc1.state("vm1")).toBe("running");
  await hosts.dc2.disarm("vm1").catch(() => undefined); // the incoming QEMU may have quit on its own already
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc1"]);
  expect(fs.readdirSync(hosts.dirs.dc2).filter((f) => !f.endsWith(".log"))).toEqual([]);
}

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

test("without group commit: refused; a forged reference: the VM runs on at the source", async () => {
  const armed = await hosts.dc2.arm("vm1", {
    address: "127.0.0.1",
    secret: SECRET,
    dedup: new DedupRebuilder(CAP, 300),
  });
  const target = { uri: armed.uri, secret: SECRET };
  const plain = await rejection(
    hosts.dc1.migrate("vm1", target, { ...opts, awaitCommit: false, dedup: new SentPages(CAP) }).done,
  );
  expect(plain.status).toBe(488);
  const err = await rejection(hosts.dc1.migrate("vm1", target, { ...opts, dedup: new ForgingPages(5000) }).done);
  expect(err.status).toBe(503);
  await stayedAtSource();
});

// A cut link reaches the source's relay as a reset or, from a middlebox that closes cleanly, as a FIN
// while QEMU still sends (a relay that took that FIN for the stream's end left QEMU blocked until its
// timeout: 504 after 30 s instead of 503 at once).
test.each(["reset", "FIN"])("the link cut mid-stream (%s): the VM runs on at the source", async (how) => {
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET, dedup: new DedupRebuilder(CAP) });
  // a cable between the relays that breaks after 8 MB
  let carried = 0;
  const cable = net.createServer((a) => {
    const b = net.connect(Number(armed.uri.split(":").at(-1)), "127.0.0.1");
    let broken = false;
    const cut = () => {
      if (broken) return;
      broken = true;
      b.destroy();
      if (how === "reset") a.resetAndDestroy();
      else a.end(); // what still comes is read and dropped
    };
    a.on("data", (d: Buffer) => ((carried += d.length) > 8e6 || broken ? cut() : b.write(d)));
    b.on("data", (d: Buffer) => broken || a.write(d));
    a.on("error", cut).on("close", cut);
    b.on("error", cut).on("close", cut);
  });
  await new Promise<void>((r) => cable.listen(0, "127.0.0.1", r));
  try {
    const uri = `tcp:127.0.0.1:${(cable.address() as net.AddressInfo).port}`;
    const t0 = Date.now();
    const err = await rejection(
      hosts.dc1.migrate("vm1", { uri, secret: SECRET }, { ...opts, dedup: new SentPages(CAP) }).done,
    );
    expect(err.status).toBe(503);
    expect(Date.now() - t0).toBeLessThan(opts.timeoutS * 1000); // failed on the cut, not on the timeout
    expect(carried).toBeGreaterThan(8e6);
    await stayedAtSource();
  } finally {
    cable.close();
  }
});

test("the ends disagree on deflate: the stream fails, the VM runs on at the source", async () => {
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET, dedup: new DedupRebuilder(CAP) });
  const err = await rejection(
    hosts.dc1.migrate("vm1", { uri: armed.uri, secret: SECRET }, { ...opts, dedup: new SentPages(CAP, true) }).done,
  );
  expect(err.status).toBe(503);
  await stayedAtSource();
});
