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
    nics: [],
    extraArgs: [],
  });
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
