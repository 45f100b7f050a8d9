/**
 * #23 point 8: a symlink at an inventory image path must never be followed. Whoever can write the
 * destination's image folder could otherwise plant a dangling link there and choose where the
 * incoming disk lands (qemu-img create follows it and creates its target).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { terminateRunDirs } from "../../lib/hypervisor/pidfile";
import { QemuDriver } from "../../lib/hypervisor/qemu";
import { CreatedImages, vetIncomingDisks } from "../../lib/hypervisor/qemu-disks";
import type { DiskSpec } from "../../nrdl/types";

jest.setTimeout(30_000);

let base: string;
let def: VmDefinition;
let planted: string;
const spec: DiskSpec = { target: "vda", sizeBytes: 16 * 2 ** 20, format: "qcow2", mode: "copy" };

beforeEach(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), "st-symlink-"));
  fs.mkdirSync(path.join(base, "img"));
  fs.mkdirSync(path.join(base, "elsewhere"));
  planted = path.join(base, "elsewhere", "chosen-by-someone-else.qcow2");
  const file = path.join(base, "img", "vm1.qcow2");
  fs.symlinkSync(planted, file); // dangling: its target does not exist yet
  def = {
    name: "vm1",
    hypervisor: "qemu",
    role: "server",
    memoryMib: 96,
    cpus: 1,
    disks: [{ target: "vda", file, format: "qcow2", mode: "copy" }],
    nics: [],
  };
});

afterEach(async () => {
  await terminateRunDirs([path.join(base, "run")]); // a QEMU the old code would have started
  fs.rmSync(base, { recursive: true, force: true });
});

test("the disk vetting names a dangling symlink at the image path", () => {
  const problems = vetIncomingDisks(def, [spec]);
  expect(problems).toEqual([expect.stringMatching(/vm1\.qcow2 is a symbolic link/)]);
});

test("creating the image refuses the symlink and leaves its target uncreated", async () => {
  const images = new CreatedImages(path.join(base, "vm1.created-images.json"));
  await expect(images.create(def, [spec])).rejects.toMatchObject({ status: 488 });
  expect(fs.existsSync(planted)).toBe(false);
  // the link is not ours: it stays, and the ledger names nothing
  expect(fs.lstatSync(def.disks[0].file).isSymbolicLink()).toBe(true);
  expect(images.list()).toEqual([]);
});

test("arming the VM refuses it with 488, starts nothing and creates nothing", async () => {
  const driver = new QemuDriver({ runDir: path.join(base, "run"), inventory: [def] });
  await expect(
    driver.arm("vm1", { address: "127.0.0.1", secret: "s-0123456789abcdef", disks: [spec], nbdSecret: "n-0123456789" }),
  ).rejects.toMatchObject({ status: 488, details: [expect.stringMatching(/symbolic link/)] });
  expect(fs.existsSync(planted)).toBe(false);
  expect(await driver.state("vm1")).toBe("absent");
});

test("a regular image is still created (through the descriptor, at the path itself)", async () => {
  fs.rmSync(def.disks[0].file);
  const images = new CreatedImages(path.join(base, "vm1.created-images.json"));
  await images.create(def, [spec]);
  expect(fs.lstatSync(def.disks[0].file).isFile()).toBe(true);
  expect(images.list()).toEqual([def.disks[0].file]);
  expect(fs.existsSync(planted)).toBe(false);
});
