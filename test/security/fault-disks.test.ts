/**
 * Faults during a disk mirror (NRDL 2, a VM whose qcow2 disk is copied): whatever stops the move
 * before the switchover, the VM runs on at the source with its disk untouched, and the destination
 * deletes the image it created in this dialog (never another file). The mirror is slowed by the
 * policy's bandwidth cap, so each fault lands while the disk is still being copied.
 *
 * Cases (the disk column of the fault matrix): destination QEMU killed during the mirror; the
 * source QEMU killed during the mirror; the operator's abort (CANCEL of the work, BYE) during the
 * mirror; the destination's filesystem full during the mirror (a small tmpfs); the destination
 * agent (a `sip-teleport listen` process) killed -9 during the mirror and restarted; the source
 * agent (a `sip-teleport migrate` process) killed -9 during the mirror, its QEMU mirroring on
 * without it; the link between the hosts cut during the mirror (the destination in a network
 * namespace of its own). Another tenant's image sits in the destination's image folder throughout:
 * the destination deletes the image it created in the dialog, never that one.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import execa from "execa";
import type { MigrationProgress } from "../../lib/hypervisor/driver";
import { livePid } from "../../lib/hypervisor/pidfile";
import { ensureGuest, type GuestFiles } from "../../lib/guest/guest";
import { ensureBuilt, runCli, type CliProcess } from "../e2e/cli-process";
import { bootOnSource, configFile, placement, startPair, type Pair, type PairOptions, SEQUENTIAL } from "../harness";
import { checkImage, dataVerdict, ext4Image, printedSeqs, waitForWriter, writerVm } from "../disks/guest-disk";
import { capturingLogger, journalOf, until } from "./fault-report";
import { StrangerNet } from "./netns";

jest.setTimeout(120_000);

/** 40 Mbit/s: the disk's few MiB of data take a few seconds to mirror. */
const policy = { ...SEQUENTIAL, bandwidthMbps: 40, timeoutS: 90 };

let guest: GuestFiles;
let images: string;
let pair: Pair | undefined;
let mounted: string | undefined;
/** Agent processes a case started (killed after it), and the namespace of the link-cut case. */
let procs: CliProcess[] = [];
let net: StrangerNet | undefined;
const OTHER_IMAGE = "other-tenant.qcow2";
const OTHER_CONTENT = "another VM's image, there before the dialog";

beforeAll(async () => {
  guest = await ensureGuest();
});
beforeEach(() => {
  images = fs.mkdtempSync(path.join(os.tmpdir(), "st-fd-"));
  for (const h of ["dc1", "dc2"]) fs.mkdirSync(path.join(images, h));
});
afterEach(async () => {
  for (const proc of procs) proc.child.kill("SIGKILL");
  await Promise.all(procs.map((proc) => proc.exited));
  procs = [];
  await pair?.close();
  await net?.destroy();
  net = undefined;
  pair = undefined;
  if (mounted) await execa("umount", [mounted], { reject: false });
  mounted = undefined;
  fs.rmSync(images, { recursive: true, force: true });
});

async function diskPair(mib = 32, inProcessDestination = true, opts: PairOptions = {}) {
  const file = (h: string) => path.join(images, h, "web.qcow2");
  const vm = (h: string) => writerVm(guest, "web", { target: "vda", file: file(h), format: "qcow2", mode: "copy" });
  // some data to copy: the mirror must take a while at the capped rate
  await ext4Image(file("dc1"), mib, "qcow2", 12);
  fs.writeFileSync(path.join(images, "dc2", OTHER_IMAGE), OTHER_CONTENT);
  pair = await startPair([vm("dc1")], {
    ...opts,
    dc2: { inventory: [vm("dc2")], ...opts.dc2 },
    destination: inProcessDestination,
  });
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
  // the image this dialog created is gone, the other tenant's is not, and nothing else was left
  expect(fs.existsSync(dst)).toBe(false);
  expect(fs.readdirSync(path.dirname(dst))).toEqual([OTHER_IMAGE]);
  expect(fs.readFileSync(path.join(path.dirname(dst), OTHER_IMAGE), "utf8")).toBe(OTHER_CONTENT);
  expect(fs.readdirSync(p.dc2.runDir).filter((f) => !f.endsWith(".log"))).toEqual([]);
}

/** The source's disk after the failed move: stopped, its filesystem clean and every record the guest printed there. */
async function expectSourceDiskIntact(src: string): Promise<void> {
  const p = pair as Pair;
  await p.dc1.host.find("web")?.driver.stop("web");
  const printed = Math.max(...printedSeqs(path.join(p.dc1.runDir, "web.serial.log")));
  expect(dataVerdict(await checkImage(src, images), printed)).toEqual({ fsck: 0, wrong: [], missing: 0 });
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
    execa.sync("fallocate", ["-l", String(take), path.join(mounted as string, "filler.img")]);
  });
  expect(summary.outcome).toBe("failed");
  expect(summary.vms[0].reason).toMatch(/No space left|disk mirror of web failed|failed/);
  fs.rmSync(path.join(mounted, "filler.img"));
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

test("source agent (sip-teleport migrate) killed -9 during the mirror: dc2 disarms on its idle timer", async () => {
  ensureBuilt();
  const { logger, lines } = capturingLogger();
  const { src, dst } = await diskPair(32, true, { dc2: { timers: { idleTimeoutS: 2 } }, logger });
  const p = pair as Pair;
  // the VM's QEMU was started by dc1's driver, not by this agent: it outlives it, as on a real host
  const source = runCli([
    "migrate",
    ...["-c", configFile(p, "dc1"), "--to", p.dc2.uri, "--json", "--bandwidth-mbps", "40", "web"],
  ]);
  procs.push(source);
  await source.waitFor(/"phase":"disks".*"disk":\{"transferredBytes":[1-9]/);
  source.child.kill("SIGKILL");
  await source.exited;
  expect(fs.existsSync(dst)).toBe(true); // being copied into when the agent died
  // the source's QEMU mirrors on, but nobody speaks SIP for it: dc2's idle timer ends the dialog
  await until("dc2 ended the dialog", () => journalOf(p.dc2.cfg.stateDir).length === 0, 30_000);
  expect(lines.find((l) => /ending dialog/.test(l))).toMatch(/no news from the source for 2 s/);
  await expectAtSourceAndClean(src, dst);
  await expectSourceDiskIntact(src);
});

test("link cut during the mirror: the move fails, the VM runs on at the source, dc2 deletes its image", async () => {
  ensureBuilt();
  net = await StrangerNet.create();
  const n = net;
  // dc1 in-process on our end of the veth; dc2 a `sip-teleport listen` (with its QEMU) in the namespace
  const sipAt = (h: string, address: string, port: number) => ({
    aor: `sip:${h}@${address}`,
    listen: [{ transport: "udp", address, port }],
  });
  const { src, dst } = await diskPair(32, false, { dc1: { sip: sipAt("dc1", n.hostAddress, 0) } });
  const p = pair as Pair;
  const port = p.dc2.cfg.sip.listen[0].port;
  const dc2File = configFile(p, "dc2", {
    sip: sipAt("dc2", n.strangerAddress, port),
    migration: { ...p.dc2.cfg.migration, address: n.strangerAddress },
    security: { allow: [n.hostAddress] },
    timers: { ...p.dc2.cfg.timers, idleTimeoutS: 3 },
  });
  const dest = runCli(["listen", "-c", dc2File], { netns: n.ns });
  procs.push(dest);
  await dest.waitFor(/listening as/);
  const link = (up: boolean) => execa.sync("ip", ["-n", n.ns, "link", "set", "eth0", up ? "up" : "down"]);
  let cutAt = 0;
  let imageWhenSourceGaveUp: boolean | undefined;
  const summary = await p.dc1.agent.migrate(
    // 5 s: the mirror needs ~3 s; with the link down it never finishes, and the source gives up
    { to: `sip:dc2@${n.strangerAddress}:${port}`, vms: ["web"], policy: { ...policy, timeoutS: 5 } },
    {
      onProgress: (e) => {
        if (cutAt || e.phase !== "disks" || (e.disk?.transferredBytes ?? 0) === 0) return;
        cutAt = Date.now();
        link(false);
      },
      onOutcome: () => {
        // dc2 decided alone, on its idle timer, during the blackout; back up so the BYEs get through
        imageWhenSourceGaveUp = fs.existsSync(dst);
        link(true);
      },
    },
  );
  expect(cutAt).toBeGreaterThan(0);
  expect(summary.outcome).toBe("failed");
  expect(summary.vms[0]).toMatchObject({ state: "failed", host: "dc1" });
  expect(summary.vms[0].reason).toMatch(/timed out after 5 s/);
  expect(summary.vms[0].disks).toContain("here, untouched: vda");
  expect(imageWhenSourceGaveUp).toBe(false);
  await until("dc2 ended the dialog", () => journalOf(p.dc2.cfg.stateDir).length === 0, 30_000);
  expect(dest.output()).toMatch(/no news from the source for 3 s/);
  await expectAtSourceAndClean(src, dst);
  await expectSourceDiskIntact(src);
});
