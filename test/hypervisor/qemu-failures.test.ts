/**
 * Migrations that go wrong: whatever happens, the VM keeps running on the source, the error says
 * what happened (as a TeleportError with a SIP status), and no dead listener stays behind.
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { TeleportError } from "../../lib/errors";
import type { MigrationHandle, MigrationOptions } from "../../lib/hypervisor/driver";
import { livePid } from "../../lib/hypervisor/pidfile";
import { QemuDriver } from "../../lib/hypervisor/qemu";
import { ensureGuest, guestVm, type GuestFiles } from "../../lib/guest/guest";
import { hostsRunning, makeHosts, tearDown, type Hosts } from "../harness/hosts";

jest.setTimeout(60_000);

const SECRET = "s3cret-one-time";
/** 40 Mbit/s: a 96 MiB guest takes several seconds, time enough to interfere. */
const slow: MigrationOptions = { bandwidthMbps: 40, downtimeLimitMs: 300, timeoutS: 30 };

let guest: GuestFiles;
let hosts: Hosts;

beforeAll(async () => {
  guest = await ensureGuest();
});

beforeEach(async () => {
  hosts = makeHosts([guestVm(guest, "vm1")]);
  await hosts.dc1.start("vm1");
});

afterEach(async () => {
  await tearDown(hosts);
});

async function rejection(p: Promise<unknown>): Promise<TeleportError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(TeleportError);
    return err as TeleportError;
  }
  throw new Error("expected a rejection");
}

/** Resolves once QEMU has sent this many bytes. */
function startSlowMigration(
  opts: MigrationOptions = slow,
): Promise<{ handle: MigrationHandle; moving: Promise<void> }> {
  return hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET }).then((armed) => {
    let started!: () => void;
    const moving = new Promise<void>((r) => (started = r));
    const handle = hosts.dc1.migrate(
      "vm1",
      { uri: armed.uri, secret: SECRET },
      {
        ...opts,
        onProgress: (p) => {
          if (p.transferredBytes > 1_000_000) started();
        },
      },
    );
    return { handle, moving };
  });
}

async function expectSourceKeepsIt(): Promise<void> {
  expect(await hosts.dc1.state("vm1")).toBe("running");
  await hosts.dc2.disarm("vm1"); // cleans a listener that is still there, no-op when it is gone
  expect(await hosts.dc2.state("vm1")).toBe("absent");
  expect(fs.readdirSync(hosts.dirs.dc2).filter((f) => !f.endsWith(".log"))).toEqual([]);
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc1"]);
}

test("no listener at the URI: 503, nothing moved", async () => {
  const srv = net.createServer().listen(0, "127.0.0.1");
  await new Promise((r) => srv.once("listening", r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r)); // a port where nobody listens
  const err = await rejection(hosts.dc1.migrate("vm1", { uri: `tcp:127.0.0.1:${port}`, secret: SECRET }, slow).done);
  expect(err.status).toBe(503);
  expect(err.reason).toMatch(/no migration listener for vm1/);
  await expectSourceKeepsIt();
});

test("destination killed mid-migration: 503, the source keeps running, the dead listener is cleaned", async () => {
  const { handle, moving } = await startSlowMigration();
  await moving;
  const dstPid = livePid(path.join(hosts.dirs.dc2, "vm1.pid"));
  expect(dstPid).toBeDefined();
  process.kill(dstPid as number, "SIGKILL");
  const err = await rejection(handle.done);
  expect(err.status).toBe(503);
  expect(err.message).toMatch(/migration of vm1 to tcp:127\.0\.0\.1:\d+ failed/);
  expect(err.details).toContain("the VM keeps running on the source");
  await expect(hosts.dc2.waitResumed("vm1", 1000)).rejects.toMatchObject({ status: 503 });
  await expectSourceKeepsIt();
});

test("a wrong secret fails the TLS handshake: 503, the source keeps running", async () => {
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET });
  const keyFile = path.join(hosts.dc2.files("vm1").pskIn, "keys.psk");
  expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
  expect(fs.readFileSync(keyFile, "utf8")).not.toContain(SECRET); // a key derived from it
  const err = await rejection(hosts.dc1.migrate("vm1", { uri: armed.uri, secret: "guessed" }, slow).done);
  expect(err.status).toBe(503);
  expect(err.details).toContain("the VM keeps running on the source");
  await expectSourceKeepsIt();
});

test(
  "a destination whose RAM differs (a KVM peer of a padded " + "TCG host): QEMU refuses, the source keeps running",
  async () => {
    hosts.dc2 = new QemuDriver({
      runDir: hosts.dirs.dc2,
      inventory: hosts.defs,
      startTimeoutMs: 10_000,
      tcgDirtyWorkaround: false,
    });
    const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET });
    const err = await rejection(hosts.dc1.migrate("vm1", { uri: armed.uri, secret: SECRET }, slow).done);
    expect(err.status).toBe(503);
    expect(err.details.join(" ")).toMatch(/keeps running on the source/);
    await expectSourceKeepsIt();
  },
);

test("timeout: cancelled with 504, the source keeps running", async () => {
  const { handle } = await startSlowMigration({ ...slow, timeoutS: 1 });
  const err = await rejection(handle.done);
  expect(err.status).toBe(504);
  expect(err.reason).toMatch(/timed out after 1 s/);
  await expectSourceKeepsIt();
});

test("abort: 487, the source keeps running", async () => {
  const { handle, moving } = await startSlowMigration();
  await moving;
  await handle.abort();
  const err = await rejection(handle.done);
  expect(err.status).toBe(487);
  await expectSourceKeepsIt();
});

test("abort while held for switchover: the VM keeps running at the source", async () => {
  const { handle } = await startSlowMigration({
    bandwidthMbps: 0,
    downtimeLimitMs: 300,
    timeoutS: 30,
    pauseBeforeSwitchover: true,
  });
  await handle.readyToSwitch;
  expect(await hosts.dc1.state("vm1")).toBe("running");
  await handle.abort();
  expect((await rejection(handle.done)).status).toBe(487);
  await expectSourceKeepsIt();
});

test(
  "a migration held for a switchover whose agent died: the " + "next agent cancels it and the VM runs at the source",
  async () => {
    const { handle } = await startSlowMigration({
      bandwidthMbps: 0,
      downtimeLimitMs: 300,
      timeoutS: 30,
      pauseBeforeSwitchover: true,
    });
    await handle.readyToSwitch;
    const restarted = hosts.reopen("dc1"); // a restarted source agent's driver: it has no handle on this migration
    expect(await restarted.settleOrphanedMigration("vm1")).toMatch(
      /\(active\) had no agent any more: cancelled, the VM runs here/,
    );
    await rejection(handle.done);
    expect(await restarted.settleOrphanedMigration("vm1")).toBeUndefined(); // nothing left to settle
    await expectSourceKeepsIt();
  },
);

test("refusals: unknown VM, VM already here, not running, disarming a VM that arrived", async () => {
  await expect(hosts.dc2.arm("nope", { address: "127.0.0.1", secret: SECRET })).rejects.toMatchObject({ status: 404 });
  await expect(hosts.dc1.arm("vm1", { address: "127.0.0.1", secret: SECRET })).rejects.toMatchObject({ status: 486 });
  await expect(hosts.dc1.start("vm1")).rejects.toMatchObject({ status: 486 });
  const notHere = await rejection(hosts.dc2.migrate("vm1", { uri: "tcp:127.0.0.1:1", secret: SECRET }, slow).done);
  expect(notHere.status).toBe(404);
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET });
  const handle = hosts.dc1.migrate("vm1", { uri: armed.uri, secret: SECRET }, { ...slow, bandwidthMbps: 0 });
  await expect(hosts.dc1.migrate("vm1", { uri: armed.uri, secret: SECRET }, slow).done).rejects.toMatchObject({
    status: 486,
  });
  await expect(hosts.dc1.stop("vm1")).rejects.toMatchObject({
    status: 486,
    reason: expect.stringMatching(/migrating out/),
  });
  await handle.done;
  await hosts.dc2.waitResumed("vm1", 10_000);
  await expect(hosts.dc2.disarm("vm1")).rejects.toMatchObject({ status: 486 });
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc2"]);
});

test("an incoming QEMU that fails to start (after binding its monitor): 500 with its words, nothing left", async () => {
  const broken = new QemuDriver({
    runDir: hosts.dirs.dc2,
    inventory: [{ ...guestVm(guest, "vm1"), extraArgs: ["-device", "no-such-device"] }],
  });
  const e = await rejection(broken.arm("vm1", { address: "127.0.0.1", secret: SECRET }));
  expect(e.status).toBe(500);
  expect(e.message).toMatch(/QEMU did not start VM vm1.*no-such-device/s);
  expect(await broken.state("vm1")).toBe("absent");
  expect(fs.readdirSync(hosts.dirs.dc2).filter((f) => !f.endsWith(".log"))).toEqual([]);
  // the host arms it as soon as QEMU can start it: nothing of the failed start is in the way
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET });
  expect(armed.uri).toMatch(/^tcp:127\.0\.0\.1:\d+$/);
});
