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
 * bench/out/disk.json.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import execa from "execa";
import { DestinationAgent } from "../agents/destination/agent";
import { SourceAgent } from "../agents/source/agent";
import { hostOf, sipOf } from "../agents/wiring";
import { parseConfig } from "../lib/config/load";
import type { DiskDefinition, MigrationResult, VmDefinition } from "../lib/hypervisor/driver";
import type { Host } from "../lib/hypervisor/host";
import { terminateRunDirs } from "../lib/hypervisor/pidfile";
import { diskSpecOf } from "../lib/hypervisor/qemu-disks";
import { silentLogger } from "../lib/log/logger";
import { ensureGuest, type GuestFiles } from "../lib/guest/guest";
import { repoRoot } from "../lib/version";
import { checkImage, ext4Image, printedSeqs, waitForWriter, writerVm } from "../test/disks/guest-disk";

const REPEAT = Number(process.env.BENCH_REPEAT ?? 2);
const DISK_MIB = Number(process.env.BENCH_DISK_MIB ?? 1024);
const DATA_MIB = Number(process.env.BENCH_DATA_MIB ?? 256);
const MODES = (process.env.BENCH_MODES ?? "copy,copy-top").split(",") as Array<"copy" | "copy-top">;
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

interface Side {
  host: Host;
  uri: string;
  agent: SourceAgent;
  dest: DestinationAgent;
  images: string;
  runDir: string;
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

async function main(): Promise<void> {
  const guest = await ensureGuest();
  const base = fs.mkdtempSync(path.join(os.tmpdir(), "st-bench-disk-"));
  const sides: Side[] = [];
  try {
    for (const [i, name] of (["dc1", "dc2"] as const).entries()) {
      const images = path.join(base, `${name}-img`);
      fs.mkdirSync(images);
      const cfg = parseConfig({
        host: name,
        sip: { aor: `sip:${name}@127.0.0.1`, listen: [{ transport: "udp", address: "127.0.0.1", port: 0 }] },
        inventory: MODES.map((m) => vmFor(m, images, guest)),
        runDir: path.join(base, name),
        stateDir: path.join(base, `${name}-state`),
        migration: { address: "127.0.0.1", ports: `${47500 + i * 100}-${47599 + i * 100}` },
      });
      const host = hostOf(cfg, silentLogger);
      const sip = sipOf(cfg, silentLogger);
      const dest = new DestinationAgent({ config: cfg, sip, host, logger: silentLogger });
      await dest.start();
      sides.push({
        host,
        dest,
        images,
        runDir: cfg.runDir,
        uri: `sip:${name}@127.0.0.1:${sip.listeners[0].port}`,
        agent: new SourceAgent({ sip, host, hostName: name, logger: silentLogger }),
      });
    }
    const [dc1, dc2] = sides;
    // the base image of copy-top: the data, on both hosts (identical copies)
    const baseImage = path.join(dc1.images, "base.qcow2");
    if (MODES.includes("copy-top")) {
      await dataImage(baseImage);
      fs.copyFileSync(baseImage, path.join(dc2.images, "base.qcow2"));
    }
    process.stdout.write(
      `bench:disk: ${DISK_MIB} MiB qcow2 with ${DATA_MIB} MiB of data, modes ${MODES.join(", ")}, ` +
        `${REPEAT} run(s) each, sip and direct alternating\n`,
    );
    const results: Record<string, { sip: Sample[]; direct: Sample[] }> = {};
    for (const mode of MODES) {
      results[mode] = { sip: [], direct: [] };
      for (let r = 0; r < REPEAT; r++)
        for (const via of ["sip", "direct"] as const) {
          const s = await oneMove(mode, via, dc1, dc2, baseImage);
          results[mode][via].push(s);
          process.stdout.write(
            `  ${mode} ${via}: ${s.totalMs.toFixed(0)} ms, downtime ${s.downtimeMs} ms, disk ` +
              `${mib(s.diskBytes)} MiB, memory ${mib(s.memoryBytes)} MiB, stall ${s.stallMs.toFixed(0)} ms, ` +
              `data ${s.dataOk ? "ok" : "BROKEN"}\n`,
          );
        }
    }
    const rows = [
      ["mode", "via", "total ms", "downtime ms", "disk MiB", "memory MiB", "writer stall ms", "data"],
      ...MODES.flatMap((m) =>
        (["sip", "direct"] as const).map((v) => {
          const xs = results[m][v];
          return [
            m,
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
    for (const m of MODES) {
      ratios[m] = median(results[m].sip.map((x) => x.totalMs)) / median(results[m].direct.map((x) => x.totalMs));
      process.stdout.write(`ratio sip/direct (${m}, median total): ${ratios[m].toFixed(3)} (target <= 1.05)\n`);
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
    for (const s of sides) await s.dest.stop().catch(() => undefined);
    await terminateRunDirs(["dc1", "dc2"].map((n) => path.join(base, n)));
    fs.rmSync(base, { recursive: true, force: true });
  }
}

/** The VM of one mode, with its image in this host's folder. */
function vmFor(mode: "copy" | "copy-top", images: string, guest: GuestFiles): VmDefinition {
  const disk: DiskDefinition = { target: "vda", file: path.join(images, `${mode}.qcow2`), format: "qcow2", mode };
  if (mode === "copy-top") disk.backing = path.join(images, "base.qcow2");
  return writerVm(guest, `${VM}-${mode}`, disk, 128);
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
    await execa("qemu-io", ["-f", "qcow2", "-c", "write -P 0x77 64M 16M", src]);
  }
  const srcDriver = dc1.host.find(vm)!.driver;
  const dstDriver = dc2.host.find(vm)!.driver;
  await srcDriver.start(vm);
  const serial = (s: Side) => path.join(s.runDir, `${vm}.serial.log`);
  await waitForWriter(serial(dc1), 50, 60_000);
  const watch = new StallWatch([serial(dc1), serial(dc2)]);
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
