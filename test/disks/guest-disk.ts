/**
 * The guest data check for disk moves: a test guest (lib/guest, st.disk=1) mounts an ext4
 * filesystem on its first disk and appends a sequence number (a 512-byte record) to /mnt/seq every few ms, printing
 * "SEQ n" on its console once n is synced. After a move: the destination's image holds a clean
 * filesystem (after the journal replay any power cut needs) and every number from 1 on, no gap,
 * at least up to the last one the guest printed anywhere.
 */
import fs from "node:fs";
import path from "node:path";
import execa from "execa";
import type { DiskDefinition, VmDefinition } from "../../lib/hypervisor/driver";
import type { GuestFiles } from "../../lib/guest/guest";
import { guestVm } from "../../lib/guest/guest";

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

export interface ImageCheck {
  /** e2fsck's verdict after the journal replay: 0 = clean. */
  fsckExit: number;
  fsckOutput: string;
  seqs: number[];
  /** Numbers missing between 1 and the last one found. */
  gaps: number[];
}

/** Check a (stopped) guest's image on a scratch raw copy; the image itself is not touched. */
export async function checkImage(image: string, scratchDir: string): Promise<ImageCheck> {
  const raw = path.join(scratchDir, `check-${process.pid}-${Date.now()}.raw`);
  try {
    await execa("qemu-img", ["convert", "-q", "-O", "raw", image, raw]);
    // the VM was powered off, not unmounted: replay the journal as the next mount would
    await execa("e2fsck", ["-y", "-E", "journal_only", raw], { reject: false });
    const fsck = await execa("e2fsck", ["-f", "-n", raw], { reject: false });
    const cat = await execa("debugfs", ["-R", "cat /seq", raw], { reject: false });
    // 512-byte records: the number, padded with spaces; a lost block reads back as zeros
    const seqs = cat.stdout
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => /^\d+$/.test(l))
      .map(Number);
    const gaps: number[] = [];
    for (let i = 1, j = 0; i <= (seqs.at(-1) ?? 0); i++) {
      if (seqs[j] === i) j++;
      else gaps.push(i);
    }
    return { fsckExit: fsck.exitCode, fsckOutput: `${fsck.stdout}\n${fsck.stderr}`, seqs, gaps };
  } finally {
    fs.rmSync(raw, { force: true });
  }
}
