/**
 * npm run bench:disk — a VM whose 1 GiB qcow2 disk holds 256 MiB of data moves between two local
 * hosts with its disk copied (mode copy: the whole image; mode copy-top: only the overlay, the
 * 1 GiB base with the data being on both hosts), once over SIP (NRDL 2 dialog: the destination
 * creates and exports the image before its 200, the source mirrors, then migrates) and once with
 * the same QMP operations issued directly through the driver (no SIP), alternating, BENCH_REPEAT
 * times each. The guest writes a synced sequence number to its disk every few ms throughout.
 * Per cell: total time (until the VM runs at the destination), QEMU's downtime, disk and memory
 * bytes, the guest writer's longest stall (seen from the host, on its consoles), and the data
 * check (clean filesystem, no number missing). Prints a table and the ratio sip/direct; writes
 * bench/out/disk.json. BENCH_DRIVERS=qemu,libvirt (the default): the same moves with the VM as a
 * libvirt domain between the two libvirtd of lib/guest/libvirt-lab.ts (root), through the libvirt
 * driver (libvirt's --copy-storage-all / --copy-storage-inc onto the armed NBD port).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import execa from "execa";
import type { DiskDefinition, MigrationResult, VmDefinition } from "../lib/hypervisor/driver";
import { terminateRunDirs } from "../lib/hypervisor/pidfile";
import { diskSpecOf } from "../lib/hypervisor/qemu-disks";
import { ensureGuest, type GuestFiles } from "../lib/guest/guest";
import { defineDomain, domainXml, startLibvirtLab, type LibvirtHost, type LibvirtLab } from "../lib/guest/libvirt-lab";
import { repoRoot } from "../lib/version";
import { loopbackHost, type LoopbackHost } from "./lib/loopback-host";
import { checkImage, ext4Image, printedSeqs, waitForWriter, writerVm } from "../test/disks/guest-disk";

const REPEAT = Number(process.env.BENCH_REPEAT ?? 2);
const DISK_MIB = Number(process.env.BENCH_DISK_MIB ?? 1024);
const DATA_MIB = Number(process.env.BENCH_DATA_MIB ?? 256);
const MODES = (process.env.BENCH_MODES ?? "copy,copy-top").split(",") as Array<"copy" | "copy-top">;
const DRIVERS = (process.env.BENCH_DRIVERS ?? "qemu,libvirt").split(",") as Array<"qemu" | "libvirt">;
const POLICY = {
  strategy: "sequential" as const,
  maxParallel: 1,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 300,
  onError: "abort" as const,
};
const VM = "store";

interface Sample {
  totalMs: number;
  downtimeMs: number;
  diskBytes: number;
  memoryBytes: number;
  stallMs: number;
  dataOk: boolean;
}

interface Side extends LoopbackHost {
  /** Where this host's images are, as the agent sees them. */
  images: string;
  /** The guest's console log on this host (libvirt's two QEMUs append to one file). */
  serial(vm: string): string;
}

/** Two hosts of one driver, each with its agents. */
interface Pair {
  driver: "qemu" | "libvirt";
  dc1: Side;
  dc2: Side;
  close(): Promise<void>;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mib = (b: number) => (b / 2 ** 20).toFixed(1);

/** Host-clock arrival times of the guest's "SEQ n" lines on both consoles: the longest gap is the stall. */
class StallWatch {
  private readonly offsets = new Map<string, number>();
  private last = 0;
  longestMs = 0;
  private readonly timer: NodeJS.Timeout;
  constructor(private readonly logs: string[]) {
    for (const l of logs) this.offsets.set(l, fs.existsSync(l) ? fs.statSync(l).size : 0);
    this.last = performance.now();
    this.timer = setInterval(() => this.poll(), 2);
  }
  private poll(): void {
    for (const l of this.logs) {
      if (!fs.existsSync(l)) continue;
      const size = fs.statSync(l).size;
      const from = this.offsets.get(l) ?? 0;
      if (size <= from) continue;
      const fd = fs.openSync(l, "r");
      const buf = Buffer.alloc(size - from);
      fs.readSync(fd, buf, 0, buf.length, from);
      fs.closeSync(fd);
      this.offsets.set(l, size);
      if (/SEQ \d+/.test(buf.toString())) {
        const now = performance.now();
        this.longestMs = Math.max(this.longestMs, now - this.last);
        this.last = now;
      }
    }
  }
  stop(): number {
    clearInterval(this.timer);
    this.poll();
    return this.longestMs;
  }
}

/** The QEMU driver's two hosts: a folder each for run dir and images. */
async function qemuPair(base: string, guest: GuestFiles): Promise<Pair> {
  const sides: Side[] = [];
  for (const [i, name] of (["dc1", "dc2"] as const).entries()) {
    const images = path.join(base, `${name}-img`);
    fs.mkdirSync(images);
    const inventory = MODES.map((m) => vmFor(m, images, guest));
    const side = await loopbackHost(base, name, inventory, `${47500 + i * 100}-${47599 + i * 100}`);
    sides.push({ ...side, images, serial: (vm) => path.join(side.runDir, `${vm}.serial.log`) });
  }
  const close = async () => {
    for (const s of sides) await s.dest.stop().catch(() => undefined);
    await terminateRunDirs(["dc1", "dc2"].map((n) => path.join(base, n)));
  };
  return { driver: "qemu", dc1: sides[0], dc2: sides[1], close };
}

/**
 * The libvirt driver's two hosts: the lab's libvirtd, each VM a domain defined alike on both, its
 * disk at /var/lib/libvirt/images (the host's own folder, bind-mounted in its libvirtd's namespace).
 */
async function libvirtPair(base: string, lab: LibvirtLab): Promise<Pair> {
  const serial = (vm: string) => path.join(base, `${vm}.serial.log`);
  const imagesOf = (h: LibvirtHost) => path.join(h.dir, "lib", "images");
  for (const mode of MODES) {
    const vm = `${VM}-${mode}`;
    const xml = domainXml(lab.guest, vm, crypto.randomUUID(), 128, 1, serial(vm), {
      disk: `/var/lib/libvirt/images/${mode}.qcow2`,
    });
    for (const h of [lab.dc1, lab.dc2]) await defineDomain(h, xml);
  }
  const sides: Side[] = [];
  for (const [i, h] of [lab.dc1, lab.dc2].entries()) {
    const images = imagesOf(h);
    fs.mkdirSync(images, { recursive: true });
    const inventory = MODES.map((m): VmDefinition => ({
      name: `${VM}-${m}`,
      hypervisor: "libvirt",
      role: "server",
      memoryMib: 128,
      cpus: 1,
      nics: [],
      disks: [diskFor(m, images)],
      libvirt: { uri: h.uri, domain: `${VM}-${m}`, defineFromSource: false },
    }));
    const side = await loopbackHost(
      path.join(base, "libvirt"),
      h.name,
      inventory,
      `${47700 + i * 100}-${47799 + i * 100}`,
    );
    sides.push({ ...side, images, serial });
  }
  const close = async () => {
    for (const s of sides) await s.dest.stop().catch(() => undefined);
    await lab.reset();
  };
  return { driver: "libvirt", dc1: sides[0], dc2: sides[1], close };
}

async function main(): Promise<void> {
  const guest = await ensureGuest();
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-bench-disk-"));
  const pairs: Pair[] = [];
  let lab: LibvirtLab | undefined;
  try {
    if (DRIVERS.includes("qemu")) pairs.push(await qemuPair(base, guest));
    if (DRIVERS.includes("libvirt")) pairs.push(await libvirtPair(base, (lab = await startLibvirtLab())));
    process.stdout.write(
      `bench:disk: ${DISK_MIB} MiB qcow2 with ${DATA_MIB} MiB of data, drivers ${DRIVERS.join(", ")}, ` +
        `modes ${MODES.join(", ")}, ${REPEAT} run(s) each, sip and direct alternating\n`,
    );
    const results: Record<string, { sip: Sample[]; direct: Sample[] }> = {};
    const cells = pairs.flatMap((pair) => MODES.map((mode) => ({ pair, mode, key: `${pair.driver} ${mode}` })));
    for (const { pair, mode, key } of cells) {
      // the base image of copy-top: the data, on both hosts (identical copies)
      const baseImage = path.join(pair.dc1.images, "base.qcow2");
      if (mode === "copy-top") {
        await dataImage(baseImage);
        fs.copyFileSync(baseImage, path.join(pair.dc2.images, "base.qcow2"));
      }
      results[key] = { sip: [], direct: [] };
      for (let r = 0; r < REPEAT; r++)
        for (const via of ["sip", "direct"] as const) {
          const s = await oneMove(mode, via, pair.dc1, pair.dc2, baseImage);
          results[key][via].push(s);
          process.stdout.write(
            `  ${key} ${via}: ${s.totalMs.toFixed(0)} ms, downtime ${s.downtimeMs} ms, disk ` +
              `${mib(s.diskBytes)} MiB, memory ${mib(s.memoryBytes)} MiB, stall ${s.stallMs.toFixed(0)} ms, ` +
              `data ${s.dataOk ? "ok" : "BROKEN"}\n`,
          );
        }
    }
    const rows = [
      ["driver", "mode", "via", "total ms", "downtime ms", "disk MiB", "memory MiB", "writer stall ms", "data"],
      ...cells.flatMap(({ pair, mode, key }) =>
        (["sip", "direct"] as const).map((v) => {
          const xs = results[key][v];
          return [
            pair.driver,
            mode,
            v,
            median(xs.map((x) => x.totalMs)).toFixed(0),
            median(xs.map((x) => x.downtimeMs)).toFixed(0),
            mib(median(xs.map((x) => x.diskBytes))),
            mib(median(xs.map((x) => x.memoryBytes))),
            Math.max(...xs.map((x) => x.stallMs)).toFixed(0),
            xs.every((x) => x.dataOk) ? "clean, every record" : "BROKEN",
          ];
        }),
      ),
    ];
    const table = rows.map((r) => `| ${r.join(" | ")} |`);
    table.splice(1, 0, `|${"---|".repeat(rows[0].length)}`);
    process.stdout.write(`\n${table.join("\n")}\n\n`);
    const ratios: Record<string, number> = {};
    for (const { key } of cells) {
      const r = results[key];
      ratios[key] = median(r.sip.map((x) => x.totalMs)) / median(r.direct.map((x) => x.totalMs));
      process.stdout.write(`ratio sip/direct (${key}, median total): ${ratios[key].toFixed(3)} (target <= 1.05)\n`);
    }
    process.stdout.write(
      `load average: ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")}\n`,
    );
    const out = path.join(repoRoot(), "bench", "out");
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(
      path.join(out, "disk.json"),
      JSON.stringify(
        { diskMib: DISK_MIB, dataMib: DATA_MIB, repeat: REPEAT, results, ratios, load: os.loadavg() },
        null,
        2,
      ),
    );
  } finally {
    for (const p of pairs) await p.close().catch(() => undefined);
    await lab?.close();
    fs.rmSync(base, { recursive: true, force: true });
  }
}

/** The VM of one mode, with its image in this host's folder. */
function vmFor(mode: "copy" | "copy-top", images: string, guest: GuestFiles): VmDefinition {
  return writerVm(guest, `${VM}-${mode}`, diskFor(mode, images), 128);
}

function diskFor(mode: "copy" | "copy-top", images: string): DiskDefinition {
  const disk: DiskDefinition = { target: "vda", file: path.join(images, `${mode}.qcow2`), format: "qcow2", mode };
  if (mode === "copy-top") disk.backing = path.join(images, "base.qcow2");
  return disk;
}

/** An ext4 image of DISK_MIB holding a file of DATA_MIB random bytes. */
async function dataImage(file: string): Promise<void> {
  await ext4Image(file, DISK_MIB, "qcow2", DATA_MIB);
}

async function oneMove(
  mode: "copy" | "copy-top",
  via: "sip" | "direct",
  dc1: Side,
  dc2: Side,
  baseImage: string,
): Promise<Sample> {
  const vm = `${VM}-${mode}`;
  const src = path.join(dc1.images, `${mode}.qcow2`);
  const dst = path.join(dc2.images, `${mode}.qcow2`);
  if (mode === "copy") await dataImage(src);
  else {
    await execa("qemu-img", ["create", "-q", "-f", "qcow2", "-b", baseImage, "-F", "qcow2", src]);
    // 16 MiB that only the overlay holds (64 MiB in: data blocks, for a disk of 256 MiB or more)
    await execa("qemu-io", ["-f", "qcow2", "-c", "write -P 0x77 64M 16M", src]);
  }
  const srcDriver = dc1.host.find(vm)!.driver;
  const dstDriver = dc2.host.find(vm)!.driver;
  await srcDriver.start(vm);
  const serial = (s: Side) => s.serial(vm);
  await waitForWriter(serial(dc1), 50, 60_000);
  const watch = new StallWatch([...new Set([serial(dc1), serial(dc2)])]);
  const t0 = performance.now();
  let result: MigrationResult;
  if (via === "sip") {
    const summary = await dc1.agent.migrate({ to: dc2.uri, vms: [vm], policy: POLICY });
    const v = summary.vms[0];
    if (summary.outcome !== "completed") throw new Error(`${mode} over SIP failed: ${v.reason}`);
    result = {
      vm,
      totalMs: v.totalMs ?? -1,
      downtimeMs: v.downtimeMs ?? -1,
      transferredBytes: v.transferredBytes ?? -1,
      diskTransferredBytes: v.diskTransferredBytes,
    };
  } else {
    const spec = await diskSpecOf(dc1.host.find(vm)!.def.disks[0]);
    const secret = `bench-${Date.now()}-migration`;
    const armed = await dstDriver.arm(vm, {
      address: "127.0.0.1",
      secret,
      disks: [spec],
      nbdSecret: `bench-${Date.now()}-nbd-secret`,
    });
    result = await srcDriver.migrate(vm, { uri: armed.uri, secret, exports: armed.exports }, POLICY).done;
    await dstDriver.waitResumed(vm, 30_000);
  }
  const totalMs = performance.now() - t0;
  // the writer goes on at the destination: wait for it, then stop and check the disk
  await new Promise((r) => setTimeout(r, 500));
  const stallMs = watch.stop();
  await dstDriver.stop(vm);
  const lastPrinted = Math.max(0, ...[dc1, dc2].flatMap((s) => printedSeqs(serial(s))));
  const check = await checkImage(dst, dc2.images);
  fs.rmSync(src);
  fs.rmSync(dst);
  for (const s of [dc1, dc2]) fs.rmSync(serial(s), { force: true });
  return {
    totalMs,
    downtimeMs: result.downtimeMs,
    diskBytes: result.diskTransferredBytes ?? 0,
    memoryBytes: result.transferredBytes,
    stallMs,
    dataOk: check.fsckExit === 0 && check.wrong.length === 0 && check.records >= lastPrinted && lastPrinted > 0,
  };
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:disk failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
