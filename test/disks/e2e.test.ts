/**
 * A VM with a local qcow2 disk moves over SIP (NRDL 2): the destination creates the image and
 * exports it before its 200 OK, the source mirrors the disk, then the memory, and completes the
 * mirror at the switchover. The guest writes a sequence number to a file on that disk every few ms
 * throughout; afterwards the destination's filesystem is clean and holds every number, no gap,
 * up to past the stop. Refusals (488) leave nothing behind.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { DiskDefinition } from "../../lib/hypervisor/driver";
import type { QemuDriver } from "../../lib/hypervisor/qemu";
import { ensureGuest, type GuestFiles } from "../../lib/guest/guest";
import { minimumVersion } from "../../nrdl";
import { FIXTURES, runSipp } from "../sip/helpers";
import { bootOnSource, placement, refusal, startPair, type Pair, SEQUENTIAL } from "../harness";
import { checkImage, dataVerdict, ext4Image, holdMirror, printedSeqs, waitForWriter, writerVm } from "./guest-disk";

jest.setTimeout(120_000);

const policy = { ...SEQUENTIAL, timeoutS: 90 };

let guest: GuestFiles;
let images: string;
let pair: Pair | undefined;

beforeAll(async () => {
  guest = await ensureGuest();
});
beforeEach(() => {
  images = fs.mkdtempSync(path.join(os.tmpdir(), "st-img-"));
  for (const h of ["dc1", "dc2"]) fs.mkdirSync(path.join(images, h));
});
afterEach(async () => {
  await pair?.close();
  pair = undefined;
  fs.rmSync(images, { recursive: true, force: true });
});

/** The writer VM on both hosts, its image in each host's own folder; the source's image made now. */
async function diskPair(mode: DiskDefinition["mode"] = "copy", mib = 24): Promise<{ src: string; dst: string }> {
  const disk = (h: string): DiskDefinition => ({
    target: "vda",
    file: path.join(images, h, "web.qcow2"),
    format: "qcow2",
    mode,
  });
  await ext4Image(disk("dc1").file, mib);
  pair = await startPair([writerVm(guest, "web", disk("dc1"))], {
    dc2: { inventory: [writerVm(guest, "web", disk("dc2"))] },
  });
  return { src: disk("dc1").file, dst: disk("dc2").file };
}

const serial = (p: Pair, host: "dc1" | "dc2") => path.join(p[host].runDir, "web.serial.log");

test("a VM with a copied qcow2 disk moves; the guest's writes up to the stop are all there, fs clean", async () => {
  const { src, dst } = await diskPair();
  const p = pair as Pair;
  await bootOnSource(p);
  await waitForWriter(serial(p, "dc1"));
  const progress: Array<{ phase: string; disk?: number }> = [];
  // once the memory moves, the mirror is held: the guest's last writes before the STOP are only at
  // the source then, and reach the destination only if the switchover completes the mirror
  const monitor = (p.dc1.host.find("web")?.driver as QemuDriver).files("web").mon;
  let held: Promise<boolean> | undefined;
  const summary = await p.dc1.agent.migrate(
    // 100 Mbit/s: the memory takes a few seconds, time for the guest to write past the held mirror
    { to: p.dc2.uri, vms: ["web"], policy: { ...policy, bandwidthMbps: 100 } },
    {
      onProgress: (e) => {
        progress.push({ phase: e.phase, disk: e.disk?.progress });
        if (e.phase === "active" && !held) held = holdMirror(monitor, serial(p, "dc1"));
      },
    },
  );
  expect(await held).toBe(true);
  expect(summary.outcome).toBe("completed");
  expect(placement(p)).toEqual({ web: ["dc2"] });
  expect(progress.some((e) => e.phase === "disks" && e.disk !== undefined)).toBe(true);
  const [vm] = summary.vms;
  expect(vm.diskTransferredBytes).toBeGreaterThan(1 << 20);
  expect(vm.disks).toContain(`the old image stays here until you remove it: vda ${src}`);
  // the destination's report, NRDL 2, carries the disk bytes too
  expect(summary.destinationReport?.results[0]).toMatchObject({ state: "completed", host: "dc2" });
  expect(summary.destinationReport?.results[0].diskTransferredBytes).toBeGreaterThan(1 << 20);
  // the guest goes on writing on the destination's disk
  const lastAtSource = Math.max(...printedSeqs(serial(p, "dc1")));
  await waitForWriter(serial(p, "dc2"), lastAtSource + 20);
  await p.dc2.host.find("web")?.driver.stop("web");
  // the source's old image is the disk as the STOP left it: every record the guest wrote before the
  // STOP, printed or not yet; the destination must hold all of them, then what it wrote there
  const atStop = await checkImage(src, images);
  expect(dataVerdict(atStop, lastAtSource)).toEqual({ fsck: 0, wrong: [], missing: 0 });
  const check = await checkImage(dst, images);
  const printed = Math.max(atStop.records, ...printedSeqs(serial(p, "dc2")));
  expect(dataVerdict(check, printed)).toEqual({ fsck: 0, wrong: [], missing: 0 });
  // the source keeps its old image (the operator removes it); nothing else was created anywhere
  expect(fs.existsSync(src)).toBe(true);
  expect(fs.readdirSync(path.join(images, "dc2"))).toEqual(["web.qcow2"]);
});

test("a destination that cannot hold the disk refuses with 488 and a reason; nothing is created", async () => {
  const { src, dst } = await diskPair();
  const p = pair as Pair;
  fs.writeFileSync(dst, "someone else's image");
  await bootOnSource(p);
  const e = await refusal(p.dc1.agent.migrate({ to: p.dc2.uri, vms: ["web"], policy }));
  expect(e.status).toBe(488);
  expect(e.details.join("\n")).toContain(`disk vda: ${dst} exists already on this host (never overwritten`);
  expect(fs.readFileSync(dst, "utf8")).toBe("someone else's image");
  expect(placement(p)).toEqual({ web: ["dc1"] });
  expect(fs.existsSync(src)).toBe(true);
});

test(
  "NRDL versions: shared disks only -> NRDL 1; a copied disk to a v1-only destination -> 400 said " + "plainly",
  async () => {
    const shared: DiskDefinition = {
      target: "vda",
      file: path.join(images, "dc1", "s.qcow2"),
      format: "qcow2",
      mode: "shared",
    };
    await ext4Image(shared.file, 8);
    const copied: DiskDefinition = { ...shared, file: path.join(images, "dc1", "c.qcow2"), mode: "copy" };
    await ext4Image(copied.file, 8);
    pair = await startPair([writerVm(guest, "s", shared), writerVm(guest, "c", copied)]);
    await bootOnSource(pair);
    const offerOf = async (vm: string) => pair!.dc1.agent.buildOffer({ to: "sip:x@127.0.0.1", vms: [vm], policy });
    expect(minimumVersion({ ...(await offerOf("s")) })).toBe(1); // any destination reads it, as before
    const withCopy = await offerOf("c");
    expect(minimumVersion(withCopy)).toBe(2);
    expect(withCopy.vms[0].disks).toEqual([{ target: "vda", sizeBytes: 8 << 20, format: "qcow2", mode: "copy" }]);
    // sipp plays a destination built before NRDL 2
    const port = 30000 + Math.floor(Math.random() * 20000);
    const v1 = runSipp(
      ["-sf", path.join(FIXTURES, "sipp", "uas-nrdl-v1.xml"), "-m", "1", "-i", "127.0.0.1", "-p", String(port)],
      30_000,
    );
    await new Promise((r) => setTimeout(r, 300)); // sipp binds its socket
    const e = await refusal(pair.dc1.agent.migrate({ to: `sip:old@127.0.0.1:${port}`, vms: ["c"], policy }));
    expect(await v1).toMatchObject({ code: 0, successful: 1, failed: 0 });
    expect({ status: e.status, reason: e.reason }).toEqual({ status: 400, reason: "unsupported version" });
    expect(e.details[0]).toBe(
      "the destination does not speak NRDL version 2, which this offer needs: moving VMs whose disks are " +
        "copied (mode copy or copy-top) needs sip-teleport with NRDL 2 at the destination",
    );
    expect(e.details[1]).toBe(
      "upgrade sip-teleport at the destination, or put the disks on storage both hosts see (mode shared)",
    );
    expect(placement(pair)).toEqual({ s: ["dc1"], c: ["dc1"] });
  },
);
