/**
 * Faults during a disk mirror (NRDL 2, a VM whose qcow2 disk is copied): whatever stops the move
 * before the switchover, the VM runs on at the source with its disk untouched, and the destination
 * deletes the image it created in this dialog (never another file). The mirror is slowed by the
 * policy's bandwidth cap, so each fault lands while the disk is still being copied.
 *
 * Cases (the disk column of the fault matrix): destination QEMU killed during the mirror; the
 * source QEMU killed during the mirror; the operator's abort (CANCEL of the work, BYE) during the
 * mirror; the destination's filesystem full during the mirror (a small tmpfs); the destination
 * agent (a `sip-teleport listen` process) killed -9 during the mirror and restarted. Not covered:
 * the source agent killed during the mirror, and the link cut during the mirror.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import execa from "execa";
import type { MigrationProgress } from "../../lib/hypervisor/driver";
import { livePid } from "../../lib/hypervisor/pidfile";
import { ensureGuest, type GuestFiles } from "../../lib/guest/guest";
import { ensureBuilt, runCli, type CliProcess } from "../e2e/cli-process";
import { bootOnSource, configFile, placement, startPair, type Pair, SEQUENTIAL } from "../harness";
import { ext4Image, printedSeqs, waitForWriter, writerVm } from "../disks/guest-disk";

jest.setTimeout(120_000);

/** 40 Mbit/s: the disk's few MiB of data take a few seconds to mirror. */
const policy = { ...SEQUENTIAL, bandwidthMbps: 40, timeoutS: 90 };

let guest: GuestFiles;
let images: string;
let pair: Pair | undefined;
let mounted: string | undefined;

beforeAll(async () => {
  guest = await ensureGuest();
});
beforeEach(() => {
  images = fs.mkdtempSync(path.join(os.tmpdir(), "st-fd-"));
  for (const h of ["dc1", "dc2"]) fs.mkdirSync(path.join(images, h));
});
afterEach(async () => {
  await pair?.close();
  pair = undefined;
  if (mounted) await execa("umount", [mounted], { reject: false });
  mounted = undefined;
  fs.rmSync(images, { recursive: true, force: true });
});

async function diskPair(mib = 32, inProcessDestination = true): Promise<{ src: string; dst: string }> {
  const file = (h: string) => path.join(images, h, "web.qcow2");
  const vm = (h: string) => writerVm(guest, "web", { target: "vda", file: file(h), format: "qcow2", mode: "copy" });
  // some data to copy: the mirror must take a while at the capped rate
  await ext4Image(file("dc1"), mib, "qcow2", 12);
  pair = await startPair([vm("dc1")], { dc2: { inventory: [vm("dc2")] }, destination: inProcessDestination });
  await bootOnSource(pair);
  await waitForWriter(path.join(pair.dc1.runDir, "web.serial.log"));
  return { src: file("dc1"), dst: file("dc2") };
}

/** Calls `fault` once the disk mirror has copied something, then expects the VM still at the source. */
async function faultDuringMirror(fault: (p: Pair) => Promise<void> | void, signal?: AbortController) {
  const p = pair as Pair;
  let fired: Promise<void> | undefined;
  const onProgress = (e: MigrationProgress): void => {
    if (!fired && e.phase === "disks" && (e.disk?.transferredBytes ?? 0) > 0) fired = Promise.resolve(fault(p));
  };
  const summary = await p.dc1.agent.migrate(
    { to: p.dc2.uri, vms: ["web"], policy, signal: signal?.signal },
    { onProgress },
  );
  await fired;
  expect(fired).toBeDefined();
  return summary;
}

async function expectAtSourceAndClean(src: string, dst: string): Promise<void> {
  const p = pair as Pair;
  expect(placement(p)).toEqual({ web: ["dc1"] });
  expect(await p.dc1.host.find("web")?.driver.state("web")).toBe("running");
  // the guest writes on at the source, on its own disk
  const serial = path.join(p.dc1.runDir, "web.serial.log");
  await waitForWriter(serial, Math.max(...printedSeqs(serial)) + 10);
  expect(fs.existsSync(src)).toBe(true);
  // the image this dialog created is gone, and nothing else was left
  expect(fs.existsSync(dst)).toBe(false);
  expect(fs.readdirSync(path.dirname(dst))).toEqual([]);
  expect(fs.readdirSync(p.dc2.runDir).filter((f) => !f.endsWith(".log"))).toEqual([]);
}

test("destination QEMU killed during the mirror", async () => {
  const { src, dst } = await diskPair();
  const summary = await faultDuringMirror((p) => {
    const pid = livePid(path.join(p.dc2.runDir, "web.pid"));
    if (pid) process.kill(pid, "SIGKILL");
  });
  expect(summary.outcome).toBe("failed");
  expect(summary.vms[0].reason).toMatch(/disk mirror of web failed|went away|failed/);
  expect(summary.vms[0].disks).toContain("here, untouched: vda");
  await expectAtSourceAndClean(src, dst);
});

test("operator abort during the mirror: cancelled, BYE, the destination deletes its image", async () => {
  const { src, dst } = await diskPair();
  const abort = new AbortController();
  const summary = await faultDuringMirror(() => abort.abort(), abort);
  expect(summary.vms[0].state).toBe("aborted");
  await expectAtSourceAndClean(src, dst);
});

test("destination filesystem full during the mirror", async () => {
  // a small filesystem for dc2's images: room for the virtual size at arming, then someone fills it
  mounted = path.join(images, "dc2");
  await execa("mount", ["-t", "tmpfs", "-o", "size=36m", "st-disk-full", mounted]);
  const { src, dst } = await diskPair();
  const summary = await faultDuringMirror(() => {
    // another tenant takes all but 256 KiB: far less than the disk still needs
    const fsInfo = fs.statfsSync(mounted as string);
    const take = fsInfo.bavail * fsInfo.bsize - (256 << 10);
    execa.sync("fallocate", ["-l", String(take), path.join(mounted as string, "other-tenant.img")]);
  });
  expect(summary.outcome).toBe("failed");
  expect(summary.vms[0].reason).toMatch(/No space left|disk mirror of web failed|failed/);
  fs.rmSync(path.join(mounted, "other-tenant.img"));
  await expectAtSourceAndClean(src, dst);
});

test(
  "source QEMU killed during the mirror: the VM is on neither host's run dir but its disk is untouched " +
    "at the source",
  async () => {
    const { src, dst } = await diskPair();
    const before = (await execa("qemu-img", ["info", "-U", "--output=json", src])).stdout;
    const summary = await faultDuringMirror((p) => {
      const pid = livePid(path.join(p.dc1.runDir, "web.pid"));
      if (pid) process.kill(pid, "SIGKILL");
    });
    expect(summary.outcome).toBe("failed");
    // a QEMU killed is a crashed VM, as without disks; what matters: dc2 did not keep a half copy
    expect(placement(pair as Pair)).toEqual({ web: [] });
    expect(fs.existsSync(dst)).toBe(false);
    expect(JSON.parse((await execa("qemu-img", ["info", "--output=json", src])).stdout)["virtual-size"]).toBe(
      JSON.parse(before)["virtual-size"],
    );
    await execa("qemu-img", ["check", src]);
  },
);

test("destination agent killed -9 during the mirror, restarted: it disarms, deletes the image it created", async () => {
  ensureBuilt();
  const { src, dst } = await diskPair(32, false);
  const p = pair as Pair;
  const procs: CliProcess[] = [];
  const listen = async (): Promise<CliProcess> => {
    const proc = runCli(["listen", "-c", configFile(p, "dc2")]);
    procs.push(proc);
    await proc.waitFor(/listening as/);
    return proc;
  };
  try {
    const first = await listen();
    let restarted: Promise<CliProcess> | undefined;
    const summary = await p.dc1.agent.migrate(
      { to: p.dc2.uri, vms: ["web"], policy },
      {
        onProgress: (e) => {
          if (restarted || e.phase !== "disks" || (e.disk?.transferredBytes ?? 0) === 0) return;
          first.child.kill("SIGKILL");
          restarted = first.exited.then(listen);
        },
      },
    );
    const second = await (restarted as Promise<CliProcess>);
    expect(second.output()).toMatch(/recovered: disarming orphaned listener.*web/);
    expect(summary.outcome).toBe("failed");
    await expectAtSourceAndClean(src, dst);
  } finally {
    for (const proc of procs) proc.child.kill("SIGKILL");
    await Promise.all(procs.map((proc) => proc.exited));
  }
});
