/**
 * A host's VM definitions, read from a JSON file: { "vms": [ { name, hypervisor, role, memoryMib,
 * cpus, kernel/initrd/append and/or disks: [{ file, format, mode, target?, backing? }] (the older
 * "disk": FILE is one shared disk), nics: [{ kind: "tap"|"user", ifname?, mac }], extraArgs? } ] }.
 * Both hosts hold identical definitions (only tap names may differ); the destination refuses VMs
 * it does not define. Every problem is reported at once, with the path of the offending field.
 * Relative file paths are taken from the inventory file's folder.
 */
import fs from "node:fs";
import path from "node:path";
import { TeleportError } from "../errors";
import { DISK_FORMATS, DISK_MODES, HYPERVISORS, ROLES, type Hypervisor, type Role } from "../../nrdl/types";
import type { DiskDefinition, LibvirtDomainRef, NicDefinition, VmDefinition } from "./driver";

export const VM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
/** Linux interface names: at most 15 bytes, no slash or whitespace. */
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

const VM_KEYS = new Set([
  "name",
  "hypervisor",
  "role",
  "memoryMib",
  "cpus",
  "kernel",
  "initrd",
  "append",
  "disk",
  "disks",
  "nics",
  "extraArgs",
  "libvirt",
]);
const LIBVIRT_KEYS = new Set(["uri", "domain", "defineFromSource"]);
/** Local libvirt only: the agent fronts this libvirt's socket when it arms (see libvirt.ts). */
const LIBVIRT_URI = /^qemu:\/\/\/system(\?socket=\/[^&\s]+)?$/;
const NIC_KEYS = new Set(["kind", "ifname", "mac"]);
const DISK_KEYS = new Set(["file", "format", "mode", "target", "backing"]);
/** A disk target becomes a QEMU node and device id: a letter first, no punctuation QEMU would parse. */
const TARGET = /^[A-Za-z][A-Za-z0-9_-]{0,31}$/;

type Raw = Record<string, unknown>;

function isRecord(v: unknown): v is Raw {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

class Problems {
  readonly list: string[] = [];
  add(at: string, msg: string): void {
    this.list.push(`${at}: ${msg}`);
  }
}

function unknownKeys(raw: Raw, allowed: Set<string>, at: string, problems: Problems): void {
  for (const k of Object.keys(raw)) if (!allowed.has(k)) problems.add(at, `unknown field "${k}"`);
}

function optionalPath(raw: Raw, key: string, at: string, baseDir: string, problems: Problems): string | undefined {
  const v = raw[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v === "") {
    problems.add(`${at}.${key}`, "must be a non-empty file path");
    return undefined;
  }
  return path.resolve(baseDir, v);
}

function positiveInt(raw: Raw, key: string, at: string, max: number, problems: Problems): number {
  const v = raw[key];
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > max) {
    problems.add(`${at}.${key}`, `must be an integer from 1 to ${max}`);
    return 0;
  }
  return v;
}

function parseNic(raw: unknown, at: string, problems: Problems): NicDefinition | undefined {
  if (!isRecord(raw)) {
    problems.add(at, "must be an object { kind, mac, ifname? }");
    return undefined;
  }
  unknownKeys(raw, NIC_KEYS, at, problems);
  const { kind, mac, ifname } = raw;
  if (kind !== "tap" && kind !== "user") problems.add(`${at}.kind`, 'must be "tap" or "user"');
  if (typeof mac !== "string" || !MAC.test(mac))
    problems.add(`${at}.mac`, "must be a MAC address like 52:54:00:12:34:56");
  else if (parseInt(mac.slice(0, 2), 16) & 1) problems.add(`${at}.mac`, "must be a unicast address (first octet even)");
  if (kind === "tap" && (typeof ifname !== "string" || !IFNAME.test(ifname)))
    problems.add(`${at}.ifname`, "a tap NIC needs the tap device name on this host (1-15 characters)");
  if (kind === "user" && ifname !== undefined) problems.add(`${at}.ifname`, "only tap NICs have an ifname");
  if ((kind !== "tap" && kind !== "user") || typeof mac !== "string") return undefined;
  return kind === "tap" ? { kind, mac: mac.toLowerCase(), ifname: String(ifname) } : { kind, mac: mac.toLowerCase() };
}

function parseLibvirt(raw: unknown, name: string, at: string, problems: Problems): LibvirtDomainRef | undefined {
  if (raw === undefined) return { uri: "qemu:///system", domain: name, defineFromSource: false };
  if (!isRecord(raw)) {
    problems.add(at, "must be an object { uri?, domain?, defineFromSource? }");
    return undefined;
  }
  unknownKeys(raw, LIBVIRT_KEYS, at, problems);
  const { uri = "qemu:///system", domain = name, defineFromSource = false } = raw;
  if (typeof uri !== "string" || !LIBVIRT_URI.test(uri))
    problems.add(
      `${at}.uri`,
      "must be qemu:///system or qemu:///system?socket=/absolute/path (the libvirt of this host)",
    );
  if (typeof domain !== "string" || !VM_NAME.test(domain))
    problems.add(`${at}.domain`, "must be a libvirt domain name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}");
  if (typeof defineFromSource !== "boolean") problems.add(`${at}.defineFromSource`, "must be true or false");
  return { uri: String(uri), domain: String(domain), defineFromSource: defineFromSource === true };
}

/** "vda", "vdb", ... for disks that do not name their target. */
const defaultTarget = (i: number): string =>
  `vd${String.fromCharCode(97 + (i % 26))}${i >= 26 ? Math.floor(i / 26) : ""}`;

function parseDisk(
  raw: unknown,
  i: number,
  at: string,
  baseDir: string,
  problems: Problems,
): DiskDefinition | undefined {
  if (!isRecord(raw)) {
    problems.add(at, "must be an object { file, format, mode, target?, backing? }");
    return undefined;
  }
  unknownKeys(raw, DISK_KEYS, at, problems);
  const file = optionalPath(raw, "file", at, baseDir, problems);
  if (file === undefined && raw.file === undefined) problems.add(`${at}.file`, "must be a non-empty file path");
  const format = raw.format;
  if (!DISK_FORMATS.includes(format as never))
    problems.add(`${at}.format`, `must be one of ${DISK_FORMATS.join(", ")}`);
  const mode = raw.mode ?? "shared";
  if (!DISK_MODES.includes(mode as never)) problems.add(`${at}.mode`, `must be one of ${DISK_MODES.join(", ")}`);
  const target = raw.target ?? defaultTarget(i);
  if (typeof target !== "string" || !TARGET.test(target))
    problems.add(`${at}.target`, "must be a letter and up to 31 letters, digits, _ or - (e.g. vda)");
  const backing = optionalPath(raw, "backing", at, baseDir, problems);
  if (mode === "copy-top" && format !== "qcow2") problems.add(`${at}.format`, "a copy-top disk is a qcow2 overlay");
  if (mode === "copy-top" && backing === undefined)
    problems.add(`${at}.backing`, "a copy-top disk needs the path of its base image (present on both hosts)");
  if (mode !== "copy-top" && raw.backing !== undefined)
    problems.add(`${at}.backing`, "only copy-top disks name a backing image");
  if (file === undefined || typeof target !== "string") return undefined;
  const disk: DiskDefinition = {
    target,
    file,
    format: format as DiskDefinition["format"],
    mode: mode as DiskDefinition["mode"],
  };
  if (backing) disk.backing = backing;
  return disk;
}

function parseDisks(raw: Raw, at: string, baseDir: string, problems: Problems): DiskDefinition[] {
  if (raw.disk !== undefined && raw.disks !== undefined) {
    problems.add(at, 'give either "disk" (one shared disk, the older form) or "disks", not both');
    return [];
  }
  if (raw.disks === undefined) {
    // the older form: one disk on storage both hosts see
    const file = optionalPath(raw, "disk", at, baseDir, problems);
    return file ? [{ target: "vda", file, format: /\.qcow2$/i.test(file) ? "qcow2" : "raw", mode: "shared" }] : [];
  }
  if (!Array.isArray(raw.disks)) {
    problems.add(`${at}.disks`, "must be a list");
    return [];
  }
  const disks = raw.disks
    .map((d, i) => parseDisk(d, i, `${at}.disks[${i}]`, baseDir, problems))
    .filter((d): d is DiskDefinition => d !== undefined);
  const seen = new Set<string>();
  for (const d of disks) {
    if (seen.has(d.target)) problems.add(`${at}.disks`, `target ${d.target} used twice`);
    seen.add(d.target);
  }
  return disks;
}

function parseVm(raw: unknown, at: string, baseDir: string, problems: Problems): VmDefinition | undefined {
  if (!isRecord(raw)) {
    problems.add(at, "must be an object");
    return undefined;
  }
  const name = typeof raw.name === "string" ? raw.name : "";
  if (!VM_NAME.test(name)) problems.add(`${at}.name`, "must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}");
  const where = name ? `${at} (${name})` : at;
  unknownKeys(raw, VM_KEYS, where, problems);
  const hypervisor = raw.hypervisor ?? "qemu"; // the hypervisor that runs here by default
  if (!HYPERVISORS.includes(hypervisor as Hypervisor))
    problems.add(`${where}.hypervisor`, `must be one of ${HYPERVISORS.join(", ")}`);
  const role = raw.role ?? "other";
  if (!ROLES.includes(role as Role)) problems.add(`${where}.role`, `must be one of ${ROLES.join(", ")}`);
  const memoryMib = positiveInt(raw, "memoryMib", where, 1 << 20, problems);
  const cpus = raw.cpus === undefined ? 1 : positiveInt(raw, "cpus", where, 256, problems);
  const kernel = optionalPath(raw, "kernel", where, baseDir, problems);
  const initrd = optionalPath(raw, "initrd", where, baseDir, problems);
  const disks = parseDisks(raw, where, baseDir, problems);
  if (raw.append !== undefined && typeof raw.append !== "string") problems.add(`${where}.append`, "must be a string");
  if (raw.libvirt !== undefined && hypervisor !== "libvirt")
    problems.add(`${where}.libvirt`, 'only VMs with hypervisor "libvirt" name a libvirt domain');
  const libvirt = hypervisor === "libvirt" ? parseLibvirt(raw.libvirt, name, `${where}.libvirt`, problems) : undefined;
  if (hypervisor === "qemu" && !kernel && disks.length === 0)
    problems.add(where, "a QEMU VM needs a kernel (with initrd/append) or a disk");
  if (!kernel && (initrd || raw.append !== undefined)) problems.add(where, "initrd and append need a kernel");
  const nicsRaw = raw.nics ?? [];
  const nics: NicDefinition[] = [];
  if (!Array.isArray(nicsRaw)) problems.add(`${where}.nics`, "must be a list");
  else
    nicsRaw.forEach((n, i) => {
      const nic = parseNic(n, `${where}.nics[${i}]`, problems);
      if (nic) nics.push(nic);
    });
  const extra = raw.extraArgs ?? [];
  if (!Array.isArray(extra) || !extra.every((a) => typeof a === "string"))
    problems.add(`${where}.extraArgs`, "must be a list of strings (one argument each, never a shell line)");
  const vm: VmDefinition = {
    name,
    hypervisor: hypervisor as Hypervisor,
    role: role as Role,
    memoryMib,
    cpus,
    disks,
    nics,
    extraArgs: Array.isArray(extra) ? (extra as string[]) : [],
  };
  if (kernel) vm.kernel = kernel;
  if (initrd) vm.initrd = initrd;
  if (typeof raw.append === "string") vm.append = raw.append;
  if (libvirt) vm.libvirt = libvirt;
  return vm;
}

/** Validate an already-parsed inventory document. `source` names it in error messages. */
export function parseInventory(doc: unknown, baseDir: string, source = "inventory"): VmDefinition[] {
  const problems = new Problems();
  const list = isRecord(doc) ? doc.vms : undefined;
  if (!Array.isArray(list))
    throw new TeleportError(400, `invalid inventory ${source}`, ['top level must be { "vms": [ ... ] }']);
  if (isRecord(doc)) unknownKeys(doc, new Set(["vms"]), "inventory", problems);
  const vms = list.map((raw, i) => parseVm(raw, `vms[${i}]`, baseDir, problems)).filter((v): v is VmDefinition => !!v);
  const seenNames = new Map<string, number>();
  const seenMacs = new Map<string, string>();
  for (const vm of vms) {
    const key = vm.name.toLowerCase(); // run-dir files must not collide on case-insensitive filesystems
    seenNames.set(key, (seenNames.get(key) ?? 0) + 1);
    if (seenNames.get(key) === 2) problems.add(`vm ${vm.name}`, "defined more than once");
    for (const nic of vm.nics) {
      const owner = seenMacs.get(nic.mac);
      if (owner) problems.add(`vm ${vm.name}`, `MAC ${nic.mac} already used by ${owner}`);
      else seenMacs.set(nic.mac, vm.name);
    }
  }
  if (problems.list.length) throw new TeleportError(400, `invalid inventory ${source}`, problems.list);
  return vms;
}

/** Read and validate an inventory file. */
export function loadInventory(file: string): VmDefinition[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new TeleportError(404, `cannot read inventory ${file}`, [err instanceof Error ? err.message : String(err)]);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new TeleportError(400, `inventory ${file} is not valid JSON`, [
      err instanceof Error ? err.message : String(err),
    ]);
  }
  return parseInventory(doc, path.dirname(path.resolve(file)), file);
}
