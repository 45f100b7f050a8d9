import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { TeleportError } from "../../lib/errors";
import { loadInventory, parseInventory } from "../../lib/hypervisor/inventory";

const good = {
  name: "web-1.dc",
  hypervisor: "qemu",
  role: "server",
  memoryMib: 96,
  cpus: 1,
  kernel: "guest/vmlinuz",
  initrd: "guest/initramfs.gz",
  append: "console=ttyS0",
  nics: [
    { kind: "tap", ifname: "vm1-dc1", mac: "52:54:00:00:00:11" },
    { kind: "user", mac: "52:54:00:00:00:12" },
  ],
  extraArgs: ["-rtc", "base=utc"],
};

function problems(doc: unknown): string[] {
  try {
    parseInventory(doc, "/base");
  } catch (err) {
    expect(err).toBeInstanceOf(TeleportError);
    expect((err as TeleportError).status).toBe(400);
    return [...(err as TeleportError).details];
  }
  throw new Error("expected the inventory to be refused");
}

test("a good inventory parses; relative paths are taken from the file's folder", () => {
  const [vm] = parseInventory({ vms: [good] }, "/base");
  expect(vm).toEqual({
    ...good,
    kernel: "/base/guest/vmlinuz",
    initrd: "/base/guest/initramfs.gz",
    disks: [],
  });
});

test("role defaults to other, nics and extraArgs to none", () => {
  const [vm] = parseInventory({ vms: [{ name: "a", hypervisor: "virtualbox", memoryMib: 512, cpus: 2 }] }, "/b");
  expect(vm).toEqual({
    name: "a",
    hypervisor: "virtualbox",
    role: "other",
    memoryMib: 512,
    cpus: 2,
    disks: [],
    nics: [],
    extraArgs: [],
  });
});

test("disks: modes, formats and targets; the older disk field is one shared disk", () => {
  const [vm] = parseInventory(
    {
      vms: [
        {
          name: "a",
          memoryMib: 96,
          disks: [
            { file: "img/a.qcow2", format: "qcow2", mode: "copy" },
            { file: "img/b.qcow2", format: "qcow2", mode: "copy-top", backing: "base/b.qcow2", target: "data" },
            { file: "/shared/c.raw", format: "raw" },
          ],
        },
      ],
    },
    "/h",
  );
  expect(vm.disks).toEqual([
    { target: "vda", file: "/h/img/a.qcow2", format: "qcow2", mode: "copy" },
    { target: "data", file: "/h/img/b.qcow2", format: "qcow2", mode: "copy-top", backing: "/h/base/b.qcow2" },
    { target: "vdc", file: "/shared/c.raw", format: "raw", mode: "shared" },
  ]);
  const [old] = parseInventory({ vms: [{ name: "b", memoryMib: 96, disk: "/img/b.qcow2" }] }, "/h");
  expect(old.disks).toEqual([{ target: "vda", file: "/img/b.qcow2", format: "qcow2", mode: "shared" }]);
  expect(
    problems({
      vms: [
        {
          name: "c",
          memoryMib: 96,
          disk: "/x.raw",
          disks: [],
        },
        {
          name: "d",
          memoryMib: 96,
          disks: [
            { file: "a", format: "vmdk", mode: "move", size: 3 },
            { file: "b", format: "raw", mode: "copy-top" },
            { file: "c", format: "qcow2", mode: "copy", backing: "z", target: "9x" },
            { format: "qcow2", target: "vdb" },
          ],
        },
      ],
    }),
  ).toEqual([
    'vms[0] (c): give either "disk" (one shared disk, the older form) or "disks", not both',
    "vms[0] (c): a QEMU VM needs a kernel (with initrd/append) or a disk",
    'vms[1] (d).disks[0]: unknown field "size"',
    "vms[1] (d).disks[0].format: must be one of qcow2, raw",
    "vms[1] (d).disks[0].mode: must be one of copy, shared, copy-top",
    "vms[1] (d).disks[1].format: a copy-top disk is a qcow2 overlay",
    "vms[1] (d).disks[1].backing: a copy-top disk needs the path of its base image (present on both hosts)",
    "vms[1] (d).disks[2].target: must be a letter and up to 31 letters, digits, _ or - (e.g. vda)",
    "vms[1] (d).disks[2].backing: only copy-top disks name a backing image",
    "vms[1] (d).disks[3].file: must be a non-empty file path",
  ]);
});

test("every problem is reported at once, with where it is", () => {
  const found = problems({
    vms: [
      { ...good, name: "-bad", memoryMib: 0, cpus: 1.5, hypervisor: "xen", role: "boss", colour: "red" },
      {
        ...good,
        name: "b",
        nics: [
          { kind: "tap", mac: "53:54:00:00:00:01" },
          { kind: "bridge", mac: "zz" },
        ],
      },
      { name: "c", hypervisor: "qemu", memoryMib: 96, cpus: 1, extraArgs: "-S -m 1" },
      { ...good, name: "x".repeat(65) },
    ],
  });
  expect(found).toEqual(
    expect.arrayContaining([
      "vms[0].name: must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}",
      'vms[0] (-bad): unknown field "colour"',
      "vms[0] (-bad).hypervisor: must be one of qemu, virtualbox, libvirt",
      "vms[0] (-bad).role: must be one of router, switch, firewall, nat, server, storage, other",
      "vms[0] (-bad).memoryMib: must be an integer from 1 to 1048576",
      "vms[0] (-bad).cpus: must be an integer from 1 to 256",
      "vms[1] (b).nics[0].mac: must be a unicast address (first octet even)",
      "vms[1] (b).nics[0].ifname: a tap NIC needs the tap device name on this host (1-15 characters)",
      'vms[1] (b).nics[1].kind: must be "tap" or "user"',
      "vms[1] (b).nics[1].mac: must be a MAC address like 52:54:00:12:34:56",
      "vms[2] (c): a QEMU VM needs a kernel (with initrd/append) or a disk",
      "vms[2] (c).extraArgs: must be a list of strings (one argument each, never a shell line)",
      `vms[3].name: must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}`,
    ]),
  );
});

test("duplicate names (any case) and MACs are refused", () => {
  const found = problems({ vms: [good, { ...good, name: "WEB-1.dc" }] });
  expect(found).toEqual([
    "vm WEB-1.dc: defined more than once",
    "vm WEB-1.dc: MAC 52:54:00:00:00:11 already used by web-1.dc",
    "vm WEB-1.dc: MAC 52:54:00:00:00:12 already used by web-1.dc",
  ]);
});

test("the top level must be { vms: [...] }", () => {
  expect(() => parseInventory([good], "/b")).toThrow(/invalid inventory/);
  expect(problems({ vms: [], hosts: [] })).toEqual(['inventory: unknown field "hosts"']);
});

test("files: unreadable is 404, not JSON is 400", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-inv-"));
  try {
    expect(() => loadInventory(path.join(dir, "none.json"))).toThrow(expect.objectContaining({ status: 404 }));
    fs.writeFileSync(path.join(dir, "bad.json"), "{ vms: [");
    expect(() => loadInventory(path.join(dir, "bad.json"))).toThrow(
      expect.objectContaining({ status: 400, reason: expect.stringMatching(/not valid JSON/) }),
    );
    fs.writeFileSync(path.join(dir, "ok.json"), JSON.stringify({ vms: [good] }));
    expect(loadInventory(path.join(dir, "ok.json"))[0].kernel).toBe(path.join(dir, "guest/vmlinuz"));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
