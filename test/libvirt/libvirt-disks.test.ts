/**
 * What the native stream lets libvirt domains do over SIP, between the two real libvirtd: a copied
 * qcow2 disk (the destination creates the image and deletes it when the move fails; the disk
 * moves over the armed NBD port; every write the guest synced arrives, filesystem clean), a copied
 * overlay onto the destination's own base (copy-top), and
 * post-copy for a guest that outwrites the link.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import net from "node:net";
import execa from "execa";
import { LibvirtDriver } from "../../lib/hypervisor/libvirt";
import type { DiskDefinition, MigrationProgress, VmDefinition } from "../../lib/hypervisor/driver";
import { startPair } from "../harness";
import { until } from "../security/fault-report";
import { checkImage, dataVerdict, ext4Image, printedSeqs, waitForWriter } from "../disks/guest-disk";
import { defineDomain, domainPlacement, domainXml, type LibvirtHost, type LibvirtLab } from "./hosts";
import { labPerFile, policy } from "./lab-per-file";

jest.setTimeout(120_000);

const f = labPerFile();
let lab: LibvirtLab;
beforeAll(() => (lab = f.lab()));

/** The domain defined alike on both hosts; its console in one file both hosts' QEMUs append to. */
async function define(name: string, extra: { disk?: string; append?: string }): Promise<string> {
  const serial = path.join(path.dirname(lab.dc1.dir), `${name}.serial.log`);
  const xml = domainXml(lab.guest, name, crypto.randomUUID(), 96, 1, serial, extra);
  await defineDomain(lab.dc1, xml);
  await defineDomain(lab.dc2, xml);
  return serial;
}

const entry = (name: string, h: LibvirtHost, disks: DiskDefinition[] = []): VmDefinition => ({
  name,
  hypervisor: "libvirt",
  role: "server",
  memoryMib: 96,
  cpus: 1,
  nics: [],
  disks,
  libvirt: { uri: h.uri, domain: name, defineFromSource: false },
});

async function pairOf(dc1: VmDefinition, dc2: VmDefinition) {
  return f.keep(await startPair([dc1], { dc1: { inventory: [dc1] }, dc2: { inventory: [dc2] } }));
}

/** Exactly one host runs `name`: libvirt's list may lag domstate a moment after an arrival (libvirt-native). */
async function placedOn(name: string, where: "dc1" | "dc2"): Promise<void> {
  const want = JSON.stringify({ [name]: [where] });
  await until(
    `${name} listed on ${where} only`,
    async () => JSON.stringify(await domainPlacement(lab, [name])) === want,
    10_000,
  ).catch(() => undefined);
  expect(await domainPlacement(lab, [name])).toEqual({ [name]: [where] });
}
describe("libvirt driver over SIP: copied disks and post-copy (native stream)", () => {
  it("copies a qcow2 disk: an aborted move deletes the image it created, the next one brings every write", async () => {
    const name = "lv-disk";
    // the same path in both domain definitions; each libvirtd sees its own /var/lib/libvirt
    const image = (h: LibvirtHost) => path.join(h.dir, "lib", "images", `${name}.qcow2`);
    for (const h of [lab.dc1, lab.dc2]) fs.mkdirSync(path.dirname(image(h)), { recursive: true });
    await ext4Image(image(lab.dc1), 24);
    const serial = await define(name, { disk: `/var/lib/libvirt/images/${name}.qcow2` });
    const disk = (h: LibvirtHost): DiskDefinition[] => [
      { target: "vda", file: image(h), format: "qcow2", mode: "copy" },
    ];
    const pair = await pairOf(entry(name, lab.dc1, disk(lab.dc1)), entry(name, lab.dc2, disk(lab.dc2)));
    await pair.dc1.host.find(name)?.driver.start(name);
    await waitForWriter(serial);

    // 1. aborted while the disk is being copied: the VM stays, the image dc2 created is gone again
    const ac = new AbortController();
    let created = false;
    const aborted = await pair.dc1.agent.migrate(
      { to: pair.dc2.uri, vms: [name], policy: { ...policy, bandwidthMbps: 40 }, signal: ac.signal },
      { onProgress: () => ((created ||= fs.existsSync(image(lab.dc2))), ac.abort()) },
    );
    expect(created).toBe(true);
    expect(aborted.vms[0].state).toBe("aborted");
    await until("dc2 deleted the image it created", async () => !fs.existsSync(image(lab.dc2)));
    await placedOn(name, "dc1");

    // 2. the move: the disk over the armed NBD port, then the memory
    const progress: MigrationProgress[] = [];
    const summary = await pair.dc1.agent.migrate(
      { to: pair.dc2.uri, vms: [name], policy: { ...policy, bandwidthMbps: 200 } },
      { onProgress: (p) => progress.push(p) },
    );
    expect(summary.outcome).toBe("completed");
    expect(summary.vms[0].diskTransferredBytes).toBeGreaterThan(1 << 20);
    expect(progress.some((p) => p.disk !== undefined && p.disk.totalBytes > 0)).toBe(true);
    await placedOn(name, "dc2");
    // the guest writes on at dc2, on its new disk; then it is powered off and its image checked
    const atSource = Math.max(...printedSeqs(serial));
    await waitForWriter(serial, atSource + 20);
    await pair.dc2.host.find(name)?.driver.stop(name);
    const check = await checkImage(image(lab.dc2), lab.dc2.dir);
    expect(dataVerdict(check, Math.max(...printedSeqs(serial)))).toEqual({ fsck: 0, wrong: [], missing: 0 });
    // the image is the VM's now, and the source keeps its old one
    expect(fs.existsSync(image(lab.dc2))).toBe(true);
    expect(fs.existsSync(image(lab.dc1))).toBe(true);
  });

  it("copy-top: only the overlay moves, onto dc2's own copy of the base, and every write arrives", async () => {
    const name = "lv-top";
    const images = (h: LibvirtHost) => path.join(h.dir, "lib", "images");
    const base = (h: LibvirtHost) => path.join(images(h), `${name}-base.qcow2`);
    const top = (h: LibvirtHost) => path.join(images(h), `${name}.qcow2`);
    for (const h of [lab.dc1, lab.dc2]) fs.mkdirSync(images(h), { recursive: true });
    // the base, 8 MiB of it data, on both hosts; the guest writes into an overlay that only dc1 has
    await ext4Image(base(lab.dc1), 24, "qcow2", 8);
    fs.copyFileSync(base(lab.dc1), base(lab.dc2));
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", "-b", base(lab.dc1), "-F", "qcow2", top(lab.dc1)]);
    const serial = await define(name, { disk: `/var/lib/libvirt/images/${name}.qcow2` });
    const disk = (h: LibvirtHost): DiskDefinition[] => [
      { target: "vda", file: top(h), format: "qcow2", mode: "copy-top", backing: base(h) },
    ];
    const pair = await pairOf(entry(name, lab.dc1, disk(lab.dc1)), entry(name, lab.dc2, disk(lab.dc2)));
    await pair.dc1.host.find(name)?.driver.start(name);
    await waitForWriter(serial);
    const summary = await pair.dc1.agent.migrate({
      to: pair.dc2.uri,
      vms: [name],
      policy: { ...policy, bandwidthMbps: 200 },
    });
    expect(summary.outcome).toBe("completed");
    // the overlay crossed, not the base's 8 MiB of data
    const moved = summary.vms[0].diskTransferredBytes ?? 0;
    expect(moved).toBeGreaterThan(0);
    expect(moved).toBeLessThan(8 << 20);
    await placedOn(name, "dc2");
    const atSource = Math.max(...printedSeqs(serial));
    await waitForWriter(serial, atSource + 20);
    await pair.dc2.host.find(name)?.driver.stop(name);
    // dc2's overlay stands on dc2's base; with it, the guest's filesystem is whole
    const info = JSON.parse((await execa("qemu-img", ["info", "--output=json", "-U", top(lab.dc2)])).stdout) as {
      "backing-filename"?: string;
    };
    expect(info["backing-filename"]).toBe(base(lab.dc2));
    const check = await checkImage(top(lab.dc2), lab.dc2.dir);
    expect(dataVerdict(check, Math.max(...printedSeqs(serial)))).toEqual({ fsck: 0, wrong: [], missing: 0 });
  });

  it("post-copy: a guest that outwrites the link switches to post-copy and runs on dc2", async () => {
    const name = "lv-postcopy";
    const serial = await define(name, { append: "st.dirty=24" });
    const pair = await pairOf(entry(name, lab.dc1), entry(name, lab.dc2));
    await pair.dc1.host.find(name)?.driver.start(name);
    // the writer's first pass done, not only booted: an idle guest would converge in pre-copy (seen once)
    const writing = /rate 24 passes [1-9]/;
    await until("writing", async () => fs.existsSync(serial) && writing.test(fs.readFileSync(serial, "utf8")));
    const phases = new Set<string>();
    const summary = await pair.dc1.agent.migrate(
      {
        to: pair.dc2.uri,
        vms: [name],
        // 40 Mbit/s: every pass then outlasts the writer's 1 s period (24 MiB in a burst of ~140 ms, then
        // sleep), so none fits in its sleep; at 120 a pass that did converged in pre-copy (1 full run in 4)
        policy: { ...policy, bandwidthMbps: 40, downtimeLimitMs: 1, convergence: "postcopy" },
      },
      { onProgress: (p) => phases.add(p.phase) },
    );
    expect(summary.outcome).toBe("completed");
    expect(phases.has("postcopy")).toBe(true);
    await placedOn(name, "dc2");
    expect(await pair.dc2.host.find(name)?.driver.state(name)).toBe("running");
  });

  it("arming takes another NBD port when the one it was given is taken before its bind", async () => {
    const name = "lv-nbd-port";
    const image = path.join(lab.dc2.dir, "lib", "images", `${name}.qcow2`);
    fs.mkdirSync(path.dirname(image), { recursive: true });
    await define(name, { disk: `/var/lib/libvirt/images/${name}.qcow2` });
    const disks: DiskDefinition[] = [{ target: "vda", file: image, format: "qcow2", mode: "copy" }];
    const dc2 = new LibvirtDriver({
      runDir: fs.mkdtempSync(path.join(lab.dc2.dir, "nbd-")),
      inventory: [entry(name, lab.dc2, disks)],
    });
    // a squatter on the port the caller checked free: another socket took it first
    const squatter = net.createServer();
    await new Promise<void>((r) => squatter.listen(0, "127.0.0.1", r));
    const taken = (squatter.address() as net.AddressInfo).port;
    const others: number[] = [];
    try {
      const armed = await dc2.arm(name, {
        address: "127.0.0.1",
        secret: crypto.randomBytes(32).toString("base64url"),
        nbdSecret: crypto.randomBytes(32).toString("base64url"),
        nbdPort: taken,
        disks: [{ target: "vda", sizeBytes: 24 << 20, format: "qcow2", mode: "copy" }],
        anotherPort: async () => {
          const free = await new Promise<number>((resolve) => {
            const s = net.createServer().listen(0, "127.0.0.1", () => {
              const port = (s.address() as net.AddressInfo).port;
              s.close(() => resolve(port));
            });
          });
          others.push(free);
          return free;
        },
      });
      const [exported] = armed.exports;
      expect(exported.uri).not.toContain(`:${taken}/`);
      // the answer names the port that was bound, and it takes a connection
      const port = Number(/:(\d+)\/vda$/.exec(exported.uri)?.[1]);
      expect(others).toContain(port);
      const probe = net.connect(port, "127.0.0.1");
      await new Promise<void>((resolve, reject) => probe.once("connect", resolve).once("error", reject));
      probe.destroy();
      expect(fs.existsSync(image)).toBe(true);
    } finally {
      squatter.close();
      await dc2.disarm(name);
    }
    expect(fs.existsSync(image)).toBe(false); // the image arming created, removed with it
  });
});
