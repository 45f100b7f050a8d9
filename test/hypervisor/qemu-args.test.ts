/** The QEMU command line a definition becomes (no QEMU started here). */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { executableIdentity } from "../../lib/hypervisor/executable";
import { QemuDriver } from "../../lib/hypervisor/qemu";

const def: VmDefinition = {
  name: "fw1",
  hypervisor: "qemu",
  role: "firewall",
  memoryMib: 256,
  cpus: 2,
  disks: [{ target: "vda", file: "/images/fw1.qcow2", format: "qcow2", mode: "shared" }],
  nics: [
    { kind: "tap", ifname: "fw1-dc1", mac: "52:54:00:00:00:41" },
    { kind: "user", mac: "52:54:00:00:00:42" },
  ],
  extraArgs: ["-rtc", "base=utc"],
};

let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-args-"))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test("a disk VM with a tap and a user NIC, as source and as incoming listener", () => {
  const d = new QemuDriver({ runDir: dir, inventory: [def], accel: { accel: "tcg", reason: "test" } });
  const args = d.qemuArgs(def, false);
  const f = d.files("fw1");
  expect(args).toEqual([
    "-name",
    "fw1",
    "-accel",
    "tcg",
    "-m",
    "262152k",
    "-smp",
    "2",
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-blockdev",
    '{"driver":"qcow2","node-name":"disk-vda","file":{"driver":"file","filename":"/images/fw1.qcow2"}}',
    "-device",
    "virtio-blk-pci,drive=disk-vda,id=vda",
    "-netdev",
    "tap,id=net0,ifname=fw1-dc1,script=no,downscript=no",
    "-device",
    "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:41,romfile=",
    "-netdev",
    "user,id=net1",
    "-device",
    "virtio-net-pci,netdev=net1,mac=52:54:00:00:00:42,romfile=",
    "-chardev",
    `file,id=serial0,path=${f.serial},append=on`,
    "-serial",
    "chardev:serial0",
    "-qmp",
    `unix:${f.qmp},server=on,wait=off`,
    "-qmp",
    `unix:${f.mon},server=on,wait=off`,
    "-pidfile",
    f.pid,
    "-daemonize",
    "-rtc",
    "base=utc",
  ]);
  expect(d.qemuArgs(def, true)).toEqual([...args, "-incoming", "defer"]);
  expect(d.inventory()).toEqual([def]);
});

test(
  "under TCG every VM gets 8 KiB more RAM (QEMU < 9.0 loses dirty " +
    "pages otherwise); KVM and the opt-out get it exact",
  () => {
    const memory = (d: QemuDriver) => d.qemuArgs(def, false)[d.qemuArgs(def, false).indexOf("-m") + 1];
    expect(memory(new QemuDriver({ runDir: dir, inventory: [def], accel: { accel: "tcg", reason: "test" } }))).toBe(
      `${256 * 1024 + 8}k`,
    );
    expect(memory(new QemuDriver({ runDir: dir, inventory: [def], accel: { accel: "kvm", reason: "test" } }))).toBe(
      "256M",
    );
    expect(
      memory(
        new QemuDriver({
          runDir: dir,
          inventory: [def],
          accel: { accel: "tcg", reason: "test" },
          tcgDirtyWorkaround: false,
        }),
      ),
    ).toBe("256M");
  },
);

test("only QEMU VMs belong to the QEMU driver; unknown VMs are refused with 404", async () => {
  const d = new QemuDriver({ runDir: dir, inventory: [def, { ...def, name: "vb", hypervisor: "virtualbox" }] });
  expect(d.inventory().map((v) => v.name)).toEqual(["fw1"]);
  await expect(d.state("vb")).rejects.toMatchObject({ status: 404 });
  expect(await d.state("fw1")).toBe("absent");
  expect(await d.available()).toMatchObject({
    ok: true,
    detail: expect.stringMatching(/QEMU emulator version .*(KVM|TCG)/),
  });
  const missing = new QemuDriver({ runDir: dir, inventory: [], qemuBinary: path.join(dir, "no-qemu") });
  expect(await missing.available()).toMatchObject({
    ok: false,
    detail: expect.stringMatching(/apt-get install qemu-system-x86/),
  });
});

test("a run dir too deep for Unix sockets is refused before QEMU starts", async () => {
  const deep = path.join(dir, "x".repeat(120));
  const d = new QemuDriver({ runDir: deep, inventory: [def] });
  await expect(d.start("fw1")).rejects.toMatchObject({
    status: 400,
    reason: expect.stringMatching(/run dir path too long/),
  });
});

test("available() runs --version once per binary file, again when it is replaced, removed or put back", async () => {
  const bin = path.join(dir, "fake-qemu");
  const calls = path.join(dir, "fake-qemu.calls");
  const install = (version: string) =>
    fs.writeFileSync(bin, `#!/bin/sh\necho x >> ${calls}\necho "QEMU emulator version ${version}"\n`, { mode: 0o755 });
  const runs = () => (fs.existsSync(calls) ? fs.readFileSync(calls, "utf8").split("\n").filter(Boolean).length : 0);
  install("7.2.1");
  const d = new QemuDriver({ runDir: dir, inventory: [def], qemuBinary: bin, accel: { accel: "tcg", reason: "t" } });
  // one offer of three VMs asks at once, the next offer asks again: one process
  await Promise.all([d.available(), d.available(), d.available()]);
  expect(await d.available()).toMatchObject({
    ok: true,
    detail: expect.stringMatching(/^QEMU emulator version 7\.2\.1;/),
  });
  expect(runs()).toBe(1);
  // an upgrade replaces the file: asked again, the new version is told
  fs.rmSync(bin);
  install("9.2.10");
  expect(await d.available()).toMatchObject({ ok: true, detail: expect.stringMatching(/version 9\.2\.10;/) });
  expect(runs()).toBe(2);
  // removed: refused at once, whatever was probed before
  fs.rmSync(bin);
  expect(await d.available()).toMatchObject({ ok: false, detail: expect.stringMatching(/not found or not working/) });
  // a binary that fails is not remembered: once it works again, it is taken
  fs.writeFileSync(bin, `#!/bin/sh\necho x >> ${calls}\nexit 1\n`, { mode: 0o755 });
  expect((await d.available()).ok).toBe(false);
  expect((await d.available()).ok).toBe(false);
  expect(runs()).toBe(4);
  fs.rmSync(bin);
  install("9.2.11");
  expect((await d.available()).ok).toBe(true);
  expect((await d.available()).ok).toBe(true);
  expect(runs()).toBe(5);
});

test("a QEMU found on PATH is known by the file PATH finds, first match first", () => {
  const a = fs.mkdtempSync(path.join(dir, "path-a-"));
  const b = fs.mkdtempSync(path.join(dir, "path-b-"));
  const searchPath = [a, b].join(path.delimiter);
  expect(executableIdentity("qemu-x", searchPath)).toBeUndefined();
  fs.writeFileSync(path.join(b, "qemu-x"), "#!/bin/sh\n", { mode: 0o755 });
  expect(executableIdentity("qemu-x", searchPath)).toMatch(new RegExp(`^${b}/qemu-x:`));
  fs.writeFileSync(path.join(a, "qemu-x"), "not executable\n", { mode: 0o644 });
  expect(executableIdentity("qemu-x", searchPath)).toMatch(new RegExp(`^${b}/qemu-x:`));
  fs.chmodSync(path.join(a, "qemu-x"), 0o755);
  expect(executableIdentity("qemu-x", searchPath)).toMatch(new RegExp(`^${a}/qemu-x:`));
});
