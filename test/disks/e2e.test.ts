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
import { ensureGuest, type GuestFiles } from "../../lib/guest/guest";
import { bootOnSource, placement, refusal, startPair, type Pair } from "../e2e/harness";
import { checkImage, ext4Image, printedSeqs, waitForWriter, writerVm } from "./guest-disk";

jest.setTimeout(120_000);

const policy = {
  strategy: "sequential" as const,
  maxParallel: 1,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 90,
  onError: "abort" as const,
};

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
  const summary = await p.dc1.agent.migrate(
    { to: p.dc2.uri, vms: ["web"], policy },
    { onProgress: (e) => progress.push({ phase: e.phase, disk: e.disk?.progress }) },
  );
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
  const check = await checkImage(dst, images);
  expect({ fsck: check.fsckExit, gaps: check.gaps }).toEqual({ fsck: 0, gaps: [] });
  const printed = Math.max(lastAtSource, ...printedSeqs(serial(p, "dc2")));
  expect(check.seqs.at(-1)).toBeGreaterThanOrEqual(printed);
  expect(check.seqs[0]).toBe(1);
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
