/**
 * Disks copied by the QEMU driver itself, two run dirs on loopback: the destination creates the
 * image and exports it over NBD (TLS-PSK), the source mirrors into it, then moves the memory. The
 * image's content must arrive whole; refusals and disarming must never touch a file we did not create.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import execa from "execa";
import type { DiskDefinition, VmDefinition } from "../../lib/hypervisor/driver";
import { terminateRunDirs } from "../../lib/hypervisor/pidfile";
import { QemuDriver } from "../../lib/hypervisor/qemu";
import { diskSpecOf } from "../../lib/hypervisor/qemu-disks";
import { DiskMirrors } from "../../lib/hypervisor/qemu-mirror";
import { QmpClient } from "../../lib/hypervisor/qmp";
import { silentLogger } from "../../lib/log/logger";
import { ensureGuest, guestVm } from "../../lib/guest/guest";

jest.setTimeout(90_000);

const SECRET = "migration-secret-0123";
const NBD_SECRET = "nbd-secret-0123456789";
let base: string;
let drivers: { dc1: QemuDriver; dc2: QemuDriver };

/** The same VM on two hosts, each with its own image folder. */
async function twoHosts(disk: Omit<DiskDefinition, "file" | "backing">, backing = false) {
  const guest = await ensureGuest();
  base = fs.mkdtempSync(path.join(os.tmpdir(), "st-dk-"));
  const def = (host: string): VmDefinition => {
    fs.mkdirSync(path.join(base, `${host}-img`), { recursive: true });
    const d: DiskDefinition = { ...disk, file: path.join(base, `${host}-img`, "vm1.qcow2") };
    if (backing) d.backing = path.join(base, `${host}-img`, "base.qcow2");
    return { ...guestVm(guest, "vm1"), disks: [d] };
  };
  const defs = { dc1: def("dc1"), dc2: def("dc2") };
  drivers = {
    dc1: new QemuDriver({ runDir: path.join(base, "dc1"), inventory: [defs.dc1] }),
    dc2: new QemuDriver({ runDir: path.join(base, "dc2"), inventory: [defs.dc2] }),
  };
  return defs;
}

afterEach(async () => {
  await terminateRunDirs([path.join(base, "dc1"), path.join(base, "dc2")]);
  fs.rmSync(base, { recursive: true, force: true });
});

/** A qcow2 image of `size` holding a recognisable pattern at a few offsets. */
async function patterned(file: string, size: string, backing?: string): Promise<void> {
  const args = ["create", "-q", "-f", "qcow2", ...(backing ? ["-b", backing, "-F", "qcow2"] : []), file, size];
  await execa("qemu-img", args);
  for (const [pattern, offset] of [
    ["0xa5", "0"],
    ["0x5a", "1M"],
    ["0x33", "7M"],
  ])
    await execa("qemu-io", ["-f", "qcow2", "-c", `write -P ${pattern} ${offset} 64k`, file]);
}

async function moveWithDisks(): Promise<void> {
  const spec = await diskSpecOf(drivers.dc1.inventory()[0].disks[0]);
  const armed = await drivers.dc2.arm("vm1", {
    address: "127.0.0.1",
    secret: SECRET,
    disks: [spec],
    nbdSecret: NBD_SECRET,
  });
  expect(armed.exports).toEqual([
    { disk: "vda", uri: expect.stringMatching(/^nbd:\/\/127\.0\.0\.1:\d+\/vda$/), secret: NBD_SECRET },
  ]);
  const phases: string[] = [];
  const result = await drivers.dc1.migrate(
    "vm1",
    { uri: armed.uri, secret: SECRET, exports: armed.exports },
    {
      bandwidthMbps: 0,
      downtimeLimitMs: 300,
      timeoutS: 60,
      onProgress: (p) => phases.push(`${p.phase}${p.disk ? "+disk" : ""}`),
    },
  ).done;
  await drivers.dc2.waitResumed("vm1", 10_000);
  expect(phases).toContain("disks+disk");
  expect(phases.at(-1)).toBe("completed+disk");
  expect(result.diskTransferredBytes).toBeGreaterThan(0);
  expect(await drivers.dc2.state("vm1")).toBe("running");
  expect(await drivers.dc1.state("vm1")).toBe("absent");
}

test("copy: the whole qcow2 image arrives, the source keeps its own untouched", async () => {
  const defs = await twoHosts({ target: "vda", format: "qcow2", mode: "copy" });
  await patterned(defs.dc1.disks[0].file, "16M");
  const before = (await execa("sha256sum", [defs.dc1.disks[0].file])).stdout.split(" ")[0];
  await drivers.dc1.start("vm1");
  await moveWithDisks();
  await drivers.dc2.stop("vm1");
  // same guest-visible content; the source image is as it was (only the guest could change it, and it is idle)
  await execa("qemu-img", ["compare", defs.dc1.disks[0].file, defs.dc2.disks[0].file]);
  expect((await execa("sha256sum", [defs.dc1.disks[0].file])).stdout.split(" ")[0]).toBe(before);
  // the image is the VM's now: nothing deletes it
  expect(fs.existsSync(defs.dc2.disks[0].file)).toBe(true);
});

test("copy-top: only the overlay moves, onto the destination's own base image", async () => {
  const defs = await twoHosts({ target: "vda", format: "qcow2", mode: "copy-top" }, true);
  await patterned(defs.dc1.disks[0].backing as string, "16M");
  fs.copyFileSync(defs.dc1.disks[0].backing as string, defs.dc2.disks[0].backing as string);
  await execa("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-b",
    defs.dc1.disks[0].backing as string,
    "-F",
    "qcow2",
    defs.dc1.disks[0].file,
  ]);
  await execa("qemu-io", ["-f", "qcow2", "-c", "write -P 0x77 2M 64k", defs.dc1.disks[0].file]);
  await drivers.dc1.start("vm1");
  await moveWithDisks();
  await drivers.dc2.stop("vm1");
  await execa("qemu-img", ["compare", defs.dc1.disks[0].file, defs.dc2.disks[0].file]);
  const info = JSON.parse((await execa("qemu-img", ["info", "--output=json", defs.dc2.disks[0].file])).stdout) as {
    "backing-filename"?: string;
  };
  expect(info["backing-filename"]).toBe(defs.dc2.disks[0].backing);
});

test("refusals before anything is created; disarm deletes only the image this arming created", async () => {
  const defs = await twoHosts({ target: "vda", format: "qcow2", mode: "copy" });
  await patterned(defs.dc1.disks[0].file, "16M");
  const spec = await diskSpecOf(defs.dc1.disks[0]);
  // a file at the destination's path is never overwritten
  fs.writeFileSync(defs.dc2.disks[0].file, "precious");
  expect(await drivers.dc2.vetDisks("vm1", [spec])).toEqual([
    `disk vda: ${defs.dc2.disks[0].file} exists already on this host (never overwritten; remove it first)`,
  ]);
  await expect(
    drivers.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET, disks: [spec], nbdSecret: NBD_SECRET }),
  ).rejects.toMatchObject({ status: 488 });
  expect(fs.readFileSync(defs.dc2.disks[0].file, "utf8")).toBe("precious");
  fs.rmSync(defs.dc2.disks[0].file);
  // more than the filesystem holds
  const huge = { ...spec, sizeBytes: 2 ** 52 };
  expect((await drivers.dc2.vetDisks("vm1", [huge]))[0]).toMatch(/^not enough space in .*: \d+\.\d MiB needed/);
  expect(await drivers.dc2.vetDisks("vm1", [{ ...spec, format: "raw" }])).toEqual([
    "disk vda: offered raw/copy, defined here as qcow2/copy",
  ]);
  // armed, then disarmed: the image it created goes, nothing else
  await drivers.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET, disks: [spec], nbdSecret: NBD_SECRET });
  expect(fs.existsSync(defs.dc2.disks[0].file)).toBe(true);
  await drivers.dc2.disarm("vm1");
  expect(fs.existsSync(defs.dc2.disks[0].file)).toBe(false);
  expect(fs.readdirSync(path.dirname(defs.dc2.disks[0].file))).toEqual([]);
});

test("a source agent died during the mirror: the next one stops its orphaned mirror, the VM moves again", async () => {
  const defs = await twoHosts({ target: "vda", format: "qcow2", mode: "copy" });
  await patterned(defs.dc1.disks[0].file, "16M");
  await drivers.dc1.start("vm1");
  const spec = await diskSpecOf(defs.dc1.disks[0]);
  const armed = await drivers.dc2.arm("vm1", {
    address: "127.0.0.1",
    secret: SECRET,
    disks: [spec],
    nbdSecret: NBD_SECRET,
  });
  // what a dying agent leaves behind: a mirror crawling at 64 KiB/s into the export, its monitor gone
  const client = await QmpClient.connect(drivers.dc1.files("vm1").qmp);
  const exp = armed.exports[0];
  await new DiskMirrors(
    client,
    "vm1",
    [{ target: "vda", mode: "copy", export: exp }],
    path.join(base, "psk-dead"),
    silentLogger,
  ).start(65536);
  await client.close();
  const restarted = new QemuDriver({ runDir: path.join(base, "dc1"), inventory: [defs.dc1] });
  expect(await restarted.settleOrphanedMigration("vm1")).toBe(
    "1 disk mirror(s) without an agent stopped, its disk is its own again",
  );
  expect(await restarted.settleOrphanedMigration("vm1")).toBeUndefined();
  expect(await restarted.state("vm1")).toBe("running");
  // the dead dialog's destination is disarmed (its image deleted); a new dialog moves the VM whole
  await drivers.dc2.disarm("vm1");
  expect(fs.existsSync(defs.dc2.disks[0].file)).toBe(false);
  drivers.dc1 = restarted;
  await moveWithDisks();
  await drivers.dc2.stop("vm1");
  await execa("qemu-img", ["compare", defs.dc1.disks[0].file, defs.dc2.disks[0].file]);
});
