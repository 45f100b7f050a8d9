/**
 * A QEMU VM's disk images on this host: how QEMU opens them (-blockdev, identical node names on
 * both hosts so a mirror and a migration find them), and on a destination the images a dialog
 * creates for copied disks. Each image file is created exclusively, never through a symlink, and
 * written down next to the VM's run files before qemu-img fills it, so a restarted agent deletes
 * exactly those and never a file that was there.
 */
import fs from "node:fs";
import path from "node:path";
import execa from "execa";
import { TeleportError } from "../errors";
import type { DiskSpec } from "../../nrdl/types";
import type { DiskDefinition, VmDefinition } from "./driver";

/** The format node of a disk: the mirror's source and the NBD export's node. */
export const diskNode = (target: string): string => `disk-${target}`;

/** -blockdev (JSON: file names need no escaping) and a virtio-blk device per disk. */
export function diskArgs(def: VmDefinition): string[] {
  return def.disks.flatMap((d) => [
    "-blockdev",
    JSON.stringify({
      driver: d.format,
      "node-name": diskNode(d.target),
      file: { driver: "file", filename: d.file },
    }),
    "-device",
    `virtio-blk-pci,drive=${diskNode(d.target)},id=${d.target}`,
  ]);
}

interface ImageInfo {
  "virtual-size": number;
  format: string;
  "backing-filename"?: string;
}

export async function imageInfo(file: string): Promise<ImageInfo> {
  // -U: the running VM holds the image's lock; reading its header is safe
  const r = await execa("qemu-img", ["info", "-U", "--output=json", file], { reject: false });
  if (r.exitCode !== 0)
    throw new TeleportError(500, `cannot read disk image ${file}`, [
      r.stderr.split("\n")[0] || "qemu-img failed (apt-get install qemu-utils)",
    ]);
  return JSON.parse(r.stdout) as ImageInfo;
}

/** What the offer says about a local disk (source side). */
export async function diskSpecOf(disk: DiskDefinition): Promise<DiskSpec> {
  const info = await imageInfo(disk.file);
  const spec: DiskSpec = { target: disk.target, sizeBytes: info["virtual-size"], format: disk.format, mode: disk.mode };
  if (disk.mode === "copy-top" && disk.backing) spec.backingBytes = fs.statSync(disk.backing).size;
  return spec;
}

export const isCopied = (d: { mode: string }): boolean => d.mode === "copy" || d.mode === "copy-top";

/** Free bytes for unprivileged use on the filesystem holding `dir`. */
function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

/** Every reason the offered disks cannot be received by `def` on this host; empty when they can. */
export function vetIncomingDisks(def: VmDefinition, offered: DiskSpec[]): string[] {
  const problems: string[] = [];
  for (const local of def.disks.filter(isCopied))
    if (!offered.some((o) => o.target === local.target))
      problems.push(
        `disk ${local.target}: defined here to be copied (${local.mode}), but the offer does not carry it ` +
          `(the source needs NRDL 2 and the same disk in its inventory)`,
      );
  const need = new Map<string, number>();
  for (const o of offered) {
    const local = def.disks.find((d) => d.target === o.target);
    if (!local) {
      problems.push(`disk ${o.target}: not defined for ${def.name} on this host`);
      continue;
    }
    if (local.format !== o.format || local.mode !== o.mode) {
      problems.push(`disk ${o.target}: offered ${o.format}/${o.mode}, defined here as ${local.format}/${local.mode}`);
      continue;
    }
    if (!isCopied(o)) {
      if (!fs.existsSync(local.file))
        problems.push(`disk ${o.target}: shared image ${local.file} is not visible on this host`);
      continue;
    }
    const there = notFree(local.file);
    if (there) {
      problems.push(`disk ${o.target}: ${there}`);
      continue;
    }
    const dir = path.dirname(local.file);
    if (!fs.existsSync(dir)) {
      problems.push(`disk ${o.target}: folder ${dir} does not exist on this host`);
      continue;
    }
    if (o.mode === "copy-top") {
      if (!local.backing || !fs.existsSync(local.backing)) {
        problems.push(`disk ${o.target}: backing image ${local.backing ?? "(none defined)"} is missing on this host`);
        continue;
      }
      const size = fs.statSync(local.backing).size;
      if (size !== o.backingBytes) {
        problems.push(
          `disk ${o.target}: backing image ${local.backing} differs (${size} bytes here, ` +
            `${o.backingBytes} at the source)`,
        );
        continue;
      }
    }
    // a copy-top overlay can grow to the virtual size too: count it whole
    need.set(dir, (need.get(dir) ?? 0) + o.sizeBytes);
  }
  for (const [dir, bytes] of need) {
    const free = freeBytes(dir);
    if (free < bytes)
      problems.push(`not enough space in ${dir}: ${mib(bytes)} needed for the copied disks, ${mib(free)} free`);
  }
  return problems;
}

const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;

/** The images a dialog created for a VM, recorded in `ledger` (a JSON list) before each exists. */
export class CreatedImages {
  constructor(private readonly ledger: string) {}

  list(): string[] {
    try {
      const v = JSON.parse(fs.readFileSync(this.ledger, "utf8")) as unknown;
      return Array.isArray(v) ? v.filter((f): f is string => typeof f === "string") : [];
    } catch {
      return [];
    }
  }

  /** Create each copied disk's image (copy-top: an overlay on the local base); all or none. */
  async create(def: VmDefinition, offered: DiskSpec[]): Promise<void> {
    try {
      for (const o of offered.filter(isCopied)) {
        const local = def.disks.find((d) => d.target === o.target);
        if (!local) throw new TeleportError(488, `disk ${o.target} is not defined here`);
        const args = ["create", "-q", "-f", o.format];
        if (o.mode === "copy-top" && local.backing)
          args.push("-b", local.backing, "-F", await baseFormat(local.backing));
        const fd = createExclusive(local.file, o.target);
        try {
          this.note(local.file);
          // qemu-img opens the file we created through our descriptor: nothing at the path can redirect it
          const r = await execa("qemu-img", [...args, "/proc/self/fd/3", String(o.sizeBytes)], {
            reject: false,
            stdio: ["ignore", "pipe", "pipe", fd],
          });
          if (r.exitCode !== 0)
            throw new TeleportError(488, `disk ${o.target}: cannot create ${local.file}`, [r.stderr.split("\n")[0]]);
        } finally {
          fs.closeSync(fd);
        }
      }
    } catch (err) {
      this.remove();
      throw TeleportError.from(err);
    }
  }

  /** Delete the images this ledger lists, then the ledger. */
  remove(): string[] {
    const files = this.list();
    for (const f of files) fs.rmSync(f, { force: true });
    fs.rmSync(this.ledger, { force: true });
    return files;
  }

  /** The VM arrived: its images are its disks now, never to be deleted by us. */
  keep(): void {
    fs.rmSync(this.ledger, { force: true });
  }

  private note(file: string): void {
    fs.writeFileSync(this.ledger, JSON.stringify([...this.list(), file]));
  }
}

/**
 * Why `file` cannot become a new image, or undefined when nothing is there. lstat, not exists: a
 * dangling symlink "does not exist" yet qemu-img would follow it and create its target, letting
 * whoever can write the image folder choose where an incoming disk lands.
 */
function notFree(file: string): string | undefined {
  const st = fs.lstatSync(file, { throwIfNoEntry: false });
  if (!st) return undefined;
  if (st.isSymbolicLink())
    return `${file} is a symbolic link on this host (refused: an image path is never followed; remove it first)`;
  return `${file} exists already on this host (never overwritten; remove it first)`;
}

/** A new, empty image file at exactly `file`: never through a symlink, never over an existing file. */
function createExclusive(file: string, target: string): number {
  const { O_CREAT, O_EXCL, O_NOFOLLOW, O_RDWR } = fs.constants;
  try {
    return fs.openSync(file, O_CREAT | O_EXCL | O_NOFOLLOW | O_RDWR, 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "EEXIST" || code === "ELOOP" ? notFree(file) : undefined;
    throw new TeleportError(488, `disk ${target}: cannot create ${file}`, [why ?? String(err)]);
  }
}

async function baseFormat(file: string): Promise<string> {
  return (await imageInfo(file)).format;
}
