/**
 * The guest data check for disk moves: a test guest (lib/guest, st.disk=1) mounts an ext4
 * filesystem on its first disk and writes sequence numbers to /mnt/seq every few ms, number n as
 * record n (4 KiB, a filesystem block of its own, written once and fsynced), printing "SEQ n" on
 * its console once n is on the disk. Since no block is ever rewritten, a write the disk copy lost
 * (a mirror not completed, or completed before the guest stopped) stays lost. After a move: the
 * destination's image holds a clean filesystem (after the journal replay any power cut needs) and
 * record n holds n for every n, in order, nothing missing, at least up to the last number the
 * guest printed anywhere (on the source's console: every write before the STOP).
 */
import fs from "node:fs";
import path from "node:path";
import execa from "execa";
import type { DiskDefinition, VmDefinition } from "../../lib/hypervisor/driver";
import type { GuestFiles } from "../../lib/guest/guest";
import { guestVm } from "../../lib/guest/guest";
import { QmpClient } from "../../lib/hypervisor/qmp";

/**
 * An ext4 filesystem in a new image of `mib` MiB (qcow2 or raw), as the guest's disk, with a file
 * /data of `dataMib` MiB of random bytes (data a copy must really move).
 */
export async function ext4Image(
  file: string,
  mib: number,
  format: "qcow2" | "raw" = "qcow2",
  dataMib = 0,
): Promise<void> {
  const raw = format === "raw" ? file : `${file}.mkfs.raw`;
  await execa("truncate", ["-s", `${mib}M`, raw]);
  await execa("mkfs.ext4", ["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", raw]);
  if (dataMib > 0) {
    const data = `${file}.data`;
    await execa("head", ["-c", `${dataMib}M`, "/dev/urandom"], { stdout: fs.openSync(data, "w") });
    const r = await execa("debugfs", ["-w", "-R", `write ${data} data`, raw], { reject: false });
    fs.rmSync(data);
    if (r.exitCode !== 0) throw new Error(`debugfs could not write ${dataMib} MiB into ${raw}: ${r.stderr}`);
  }
  if (format === "qcow2") {
    await execa("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, file]);
    fs.rmSync(raw);
  }
}

/** The writer guest with one disk, as each host's inventory defines it (`file` per host). */
export function writerVm(guest: GuestFiles, name: string, disk: DiskDefinition, memoryMib = 96): VmDefinition {
  const base = guestVm(guest, name, { memoryMib });
  return { ...base, append: `${base.append} st.disk=1`, disks: [disk] };
}

/** Numbers the guest printed as synced, in a host's serial log. */
export function printedSeqs(serialLog: string): number[] {
  if (!fs.existsSync(serialLog)) return [];
  return [...fs.readFileSync(serialLog, "utf8").matchAll(/^SEQ (\d+)\r?$/gm)].map((m) => Number(m[1]));
}

/** Wait until the guest's console shows its writer running (at least `n` numbers synced). */
export async function waitForWriter(serialLog: string, n = 20, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((printedSeqs(serialLog).at(-1) ?? 0) < n) {
    if (fs.existsSync(serialLog) && fs.readFileSync(serialLog, "utf8").includes("DISK-FAILED"))
      throw new Error(`the guest could not mount its disk: ${serialLog}`);
    if (Date.now() > deadline) throw new Error(`the guest's disk writer did not start: ${serialLog}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Bytes of one record of /mnt/seq: the number, padded with spaces, and a newline. */
export const RECORD_BYTES = 4096;

export interface ImageCheck {
  /** e2fsck's verdict after the journal replay: 0 = clean. */
  fsckExit: number;
  fsckOutput: string;
  /** Records in /mnt/seq (its size / RECORD_BYTES). */
  records: number;
  /** Positions n whose record does not hold n (a lost write reads back as zeros): none when intact. */
  wrong: number[];
}

/** Check a (stopped) guest's image on a scratch raw copy; the image itself is not touched. */
export async function checkImage(image: string, scratchDir: string): Promise<ImageCheck> {
  const stamp = `${process.pid}-${Date.now()}`;
  const raw = path.join(scratchDir, `check-${stamp}.raw`);
  const seq = path.join(scratchDir, `check-${stamp}.seq`);
  try {
    await execa("qemu-img", ["convert", "-q", "-O", "raw", image, raw]);
    // the VM was powered off, not unmounted: replay the journal as the next mount would
    await execa("e2fsck", ["-y", "-E", "journal_only", raw], { reject: false });
    const fsck = await execa("e2fsck", ["-f", "-n", raw], { reject: false });
    await execa("debugfs", ["-R", `dump /seq ${seq}`, raw], { reject: false });
    const data = fs.existsSync(seq) ? fs.readFileSync(seq) : Buffer.alloc(0);
    const records = Math.floor(data.length / RECORD_BYTES);
    const wrong: number[] = [];
    for (let n = 1; n <= records; n++) {
      const rec = data.subarray((n - 1) * RECORD_BYTES, n * RECORD_BYTES).toString("latin1");
      if (rec.trim() !== String(n)) wrong.push(n);
    }
    return { fsckExit: fsck.exitCode, fsckOutput: `${fsck.stdout}\n${fsck.stderr}`, records, wrong };
  } finally {
    fs.rmSync(raw, { force: true });
    fs.rmSync(seq, { force: true });
  }
}

/**
 * The verdict the disk tests expect: clean, every record in its place, and at least every number
 * the guest printed (on the source before the STOP, on the destination after it).
 */
export function dataVerdict(check: ImageCheck, printed: number): { fsck: number; wrong: number[]; missing: number } {
  return {
    fsck: check.fsckExit,
    wrong: check.wrong.slice(0, 20),
    missing: Math.max(0, printed - check.records),
  };
}

/**
 * Hold the source's mirror of vda (block-job-pause, through the VM's monitor socket) and wait until
 * the guest has written past it (two more numbers on its console, `serialLog`): from then on the
 * destination lacks blocks the guest wrote, and only the completion of the mirror at the switchover
 * (block-job-cancel of a ready job, which resumes a paused one and copies what is left) carries
 * them. Slowing the mirror would not do: QEMU ignores its speed limit once it is in sync. False
 * when the guest wrote nothing more within `timeoutMs`.
 */
export async function holdMirror(monitor: string, serialLog: string, timeoutMs = 10_000): Promise<boolean> {
  const mon = await QmpClient.connect(monitor);
  const before = printedSeqs(serialLog).at(-1) ?? 0;
  try {
    await mon.execute("block-job-pause", { device: "st-mirror-vda" });
  } finally {
    await mon.close(); // the driver asks this socket too
  }
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline;) {
    if ((printedSeqs(serialLog).at(-1) ?? 0) >= before + 2) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}
