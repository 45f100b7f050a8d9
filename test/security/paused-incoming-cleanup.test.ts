/**
 * #23 point 8: an incoming VM that arrives paused (the source was paused, so QEMU sends no RESUME)
 * must still have its NBD export, its migration key folders and its monitor closed. Left open,
 * the writable NBD export of the VM's whole disk keeps listening with a key nobody needs.
 * Since #24 such an arrival is run by the destination's driver (every VM runs when its migration
 * starts, and a switchover's QMP stop is what hands the destination a paused run state), unless
 * it was armed to hold arrivals for a group's decision.
 */
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import execa from "execa";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { terminateRunDirs } from "../../lib/hypervisor/pidfile";
import { QemuDriver } from "../../lib/hypervisor/qemu";
import { diskSpecOf } from "../../lib/hypervisor/qemu-disks";
import { QmpClient } from "../../lib/hypervisor/qmp";
import { ensureGuest, guestVm } from "../../lib/guest/guest";

jest.setTimeout(120_000);

let base: string;
let dc1: QemuDriver;
let dc2: QemuDriver;

beforeEach(async () => {
  const guest = await ensureGuest();
  base = fs.mkdtempSync(path.join(os.tmpdir(), "st-paused-"));
  const def = (host: string): VmDefinition => {
    fs.mkdirSync(path.join(base, `${host}-img`));
    const file = path.join(base, `${host}-img`, "vm1.qcow2");
    return { ...guestVm(guest, "vm1"), disks: [{ target: "vda", file, format: "qcow2", mode: "copy" }] };
  };
  const d1 = def("dc1");
  await execa("qemu-img", ["create", "-q", "-f", "qcow2", d1.disks[0].file, "8M"]);
  dc1 = new QemuDriver({ runDir: path.join(base, "dc1"), inventory: [d1] });
  dc2 = new QemuDriver({ runDir: path.join(base, "dc2"), inventory: [def("dc2")] });
});

afterEach(async () => {
  await terminateRunDirs([path.join(base, "dc1"), path.join(base, "dc2")]);
  fs.rmSync(base, { recursive: true, force: true });
});

const portOpen = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });

/** Whether the long-operation monitor is free: QEMU greets one client at a time on it. */
async function monitorFree(file: string): Promise<boolean> {
  const c = await QmpClient.connect(file, { timeoutMs: 1500 }).catch(() => undefined);
  await c?.close();
  return c !== undefined;
}

async function until(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Start vm1 at dc1 and move it (memory and disk) to dc2, the source paused by an operator's
 * "stop" once the move is under way (a paused VM is not offered): the copy arrives paused.
 */
async function movePaused(): Promise<{ nbdPort: number }> {
  await dc1.start("vm1");
  const spec = await diskSpecOf(dc1.inventory()[0].disks[0]);
  const armed = await dc2.arm("vm1", {
    address: "127.0.0.1",
    secret: "migration-secret-0123",
    disks: [spec],
    nbdSecret: "nbd-secret-0123456789",
  });
  const nbdPort = Number(/:(\d+)\//.exec(armed.exports[0].uri)?.[1]);
  expect(await portOpen(nbdPort)).toBe(true);
  expect(fs.existsSync(dc2.files("vm1").pskIn)).toBe(true);
  expect(fs.existsSync(dc2.files("vm1").pskNbd)).toBe(true);
  let paused: Promise<void> | undefined;
  const pause = async (): Promise<void> => {
    const mon = await QmpClient.connect(dc1.files("vm1").mon);
    await mon.execute("stop");
    await mon.close();
  };
  await dc1.migrate(
    "vm1",
    { uri: armed.uri, secret: "migration-secret-0123", exports: armed.exports },
    { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 60, onProgress: () => void (paused ??= pause()) },
  ).done;
  await paused;
  await until("the arrival runs", async () => (await dc2.state("vm1")) === "running");
  return { nbdPort };
}

test("arrived paused: NBD port closed, key folders removed, monitor freed, without anyone asking", async () => {
  const { nbdPort } = await movePaused();
  await until("the NBD export closes", async () => !(await portOpen(nbdPort)));
  await until("the key folders go", async () => !fs.existsSync(dc2.files("vm1").pskIn));
  expect(fs.existsSync(dc2.files("vm1").pskNbd)).toBe(false);
  await until("the monitor is freed", () => monitorFree(dc2.files("vm1").qmp));
  // the VM is the only copy: still there, running, its image kept
  expect(await dc2.state("vm1")).toBe("running");
  expect(fs.existsSync(dc2.inventory()[0].disks[0].file)).toBe(true);
  expect(fs.existsSync(dc2.files("vm1").createdImages)).toBe(false);
});

test("arrived paused, then the dialog ends (disarm) or waits (waitResumed): nothing left open", async () => {
  const { nbdPort } = await movePaused();
  await expect(dc2.disarm("vm1")).rejects.toMatchObject({ status: 486 });
  await until("the NBD export closes", async () => !(await portOpen(nbdPort)));
  expect(fs.existsSync(dc2.files("vm1").pskIn)).toBe(false);
  expect(fs.existsSync(dc2.files("vm1").pskNbd)).toBe(false);
  await until("the monitor is freed", () => monitorFree(dc2.files("vm1").qmp));
  await dc2.waitResumed("vm1", 3000);
  expect(await portOpen(nbdPort)).toBe(false);
  expect(await dc2.state("vm1")).toBe("running");
});
