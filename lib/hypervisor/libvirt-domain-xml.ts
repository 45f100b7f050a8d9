/**
 * A libvirt domain definition as a parsed document (libvirt-xml.ts), and what the armed port asks
 * of one that arrives: it is the armed domain as this host defines it. The whole definition is
 * compared with the local one (`virsh dumpxml --migratable`); only what libvirt itself adds to a
 * migratable definition may differ (MAY_DIFFER), every host resource it names must be one the
 * local definition names, and vocabularies of other namespaces (qemu:commandline hands QEMU raw
 * arguments) are refused outright.
 */
import { canonical, child, childrenNamed, parseLibvirtXml, type XmlElement } from "./libvirt-xml";

/** What the receiving side compares with the offer. */
export interface DomainShape {
  name: string;
  memoryKib: number;
  vcpus: number;
  uuid: string;
  /** The QEMU binary libvirt runs for it. */
  emulator: string;
  /** The domain's disks with a source, in XML order: target ("vda") and source file. */
  disks: Array<{ target: string; source: string }>;
}

export type DomainResult = { ok: true; domain: XmlElement } | { ok: false; why: string };

/** A definition with one <domain> root, one <name> and at most one <uuid> (libvirt reads the first). */
export function parseDomain(xml: string): DomainResult {
  const doc = parseLibvirtXml(xml);
  if (!doc.ok) return doc;
  return checkDomainElement(doc.root);
}

export function checkDomainElement(root: XmlElement): DomainResult {
  if (root.name !== "domain") return { ok: false, why: `its root element is <${root.name}>, not <domain>` };
  const names = childrenNamed(root, "name");
  if (names.length !== 1) return { ok: false, why: `it has ${names.length} <name> elements` };
  if (childrenNamed(root, "uuid").length > 1) return { ok: false, why: "it has more than one <uuid>" };
  return { ok: true, domain: root };
}

const KIB_PER_UNIT: ReadonlyMap<string, number> = new Map([
  ["b", 1 / 1024],
  ["bytes", 1 / 1024],
  ["KiB", 1],
  ["k", 1],
  ["MiB", 1024],
  ["M", 1024],
  ["GiB", 1024 ** 2],
  ["G", 1024 ** 2],
]);

export function domainShape(domain: XmlElement): DomainShape {
  const memory = child(domain, "memory");
  const factor = KIB_PER_UNIT.get(memory?.attrs.get("unit") ?? "KiB") ?? 1;
  const devices = child(domain, "devices");
  const disks = childrenNamed(devices, "disk").flatMap((d) => {
    const src = child(d, "source");
    const source = src?.attrs.get("file") ?? src?.attrs.get("dev") ?? src?.attrs.get("name");
    return source ? [{ target: child(d, "target")?.attrs.get("dev") ?? "", source }] : [];
  });
  return {
    name: child(domain, "name")?.text ?? "",
    memoryKib: Math.round(Number(memory?.text ?? 0) * factor),
    vcpus: Number(child(domain, "vcpu")?.text ?? 0),
    uuid: child(domain, "uuid")?.text ?? "",
    emulator: child(devices, "emulator")?.text ?? "",
    disks,
  };
}

/**
 * What libvirt itself changes between a domain's migratable definition on the source and the
 * destination's (seen with libvirt 9.0: the cgroup partition of a running domain; the implicit
 * controllers, PS/2 inputs and audio backend that other libvirt versions write out or drop; the
 * empty <backingStore/> of a running domain's disk).
 * None of them names a host resource.
 */
const MAY_DIFFER: ReadonlyArray<{ parent: string; name: string; when(el: XmlElement): boolean }> = [
  { parent: "domain", name: "resource", when: (el) => el.children.every((c) => c.name === "partition") },
  {
    parent: "domain/devices",
    name: "controller",
    when: (el) => ["usb", "pci", "ide", "sata", "virtio-serial"].includes(el.attrs.get("type") ?? ""),
  },
  { parent: "domain/devices", name: "input", when: (el) => el.attrs.get("bus") === "ps2" },
  { parent: "domain/devices", name: "audio", when: (el) => el.attrs.get("type") === "none" },
  // a running domain's disk without a backing chain says so (an empty <backingStore/>): nothing of the host
  {
    parent: "domain/devices/disk",
    name: "backingStore",
    when: (el) => !el.children.length && !el.attrs.size && !el.text,
  },
];

function mayDiffer(parent: string, el: XmlElement): boolean {
  return MAY_DIFFER.some((m) => m.parent === parent && m.name === el.name && m.when(el));
}

/** Devices that reach something of the host through their <source> (or <backend>, or a tap's <target>). */
const HOST_DEVICES = new Set([
  "disk",
  "filesystem",
  "hostdev",
  "serial",
  "parallel",
  "console",
  "channel",
  "interface",
  "smartcard",
  "redirdev",
  "rng",
  "tpm",
  "shmem",
]);
/** Files of the host the domain's boot reads. */
const OS_FILES = ["kernel", "initrd", "dtb", "loader", "nvram"];

/** Every host resource a definition names, one readable line each. */
export function hostResources(domain: XmlElement): string[] {
  const out: string[] = [];
  const devices = child(domain, "devices");
  const emulator = child(devices, "emulator");
  if (emulator) out.push(`emulator ${emulator.text}`);
  for (const f of OS_FILES) for (const el of childrenNamed(child(domain, "os"), f)) out.push(`os ${f} ${el.text}`);
  for (const dev of devices?.children ?? []) {
    if (!HOST_DEVICES.has(dev.name)) continue;
    const refs = dev.children.filter(
      (c) => c.name === "source" || c.name === "backend" || (dev.name === "interface" && c.name === "target"),
    );
    // a pty, a user-mode NIC or an empty CD-ROM names nothing of the host; a filesystem or hostdev always does
    if (!refs.length && dev.name !== "hostdev" && dev.name !== "filesystem") continue;
    const type = dev.attrs.get("type");
    out.push(`${dev.name}${type ? ` type=${JSON.stringify(type)}` : ""} ${refs.map(canonical).join("")}`.trim());
  }
  return out;
}

/** Elements or namespace declarations of another vocabulary, outside <metadata> (the place libvirt keeps for them). */
function foreignVocabulary(el: XmlElement, path: string): string | undefined {
  if (path === "domain/metadata") return undefined;
  if (el.name.includes(":")) return `<${el.name}> at /${path}`;
  for (const attr of el.attrs.keys())
    if (attr === "xmlns" || attr.includes(":")) return `the attribute ${attr} at /${path}`;
  for (const c of el.children) {
    const found = foreignVocabulary(c, `${path}/${c.name}`);
    if (found) return found;
  }
  return undefined;
}

/**
 * Why `incoming` is not the armed domain as `local` defines it, or undefined. `local` absent (the
 * inventory's defineFromSource): no host resources to compare with, so only the vocabulary is checked.
 */
export function domainMismatch(incoming: XmlElement, local: XmlElement | undefined): string | undefined {
  const foreign = foreignVocabulary(incoming, "domain");
  if (foreign) return `it uses another XML vocabulary (${foreign}): libvirt would pass it on to QEMU unchecked`;
  if (!local) return undefined;
  const here = new Set(hostResources(local));
  const strange = hostResources(incoming).filter((r) => !here.has(r));
  if (strange.length) return `it names host resources the definition here does not: ${strange.join("; ")}`;
  return difference(incoming, local, "domain");
}

/** The first place where two elements differ, children in order, MAY_DIFFER left out on both sides. */
function difference(got: XmlElement, here: XmlElement, path: string): string | undefined {
  if (got.name !== here.name) return `/${path} is <${got.name}>, here <${here.name}>`;
  for (const k of new Set([...got.attrs.keys(), ...here.attrs.keys()])) {
    const [a, b] = [got.attrs.get(k), here.attrs.get(k)];
    if (a !== b) return `/${path}/@${k} is ${shown(a)}, here ${shown(b)}`;
  }
  if (got.text !== here.text) return `/${path} says ${shown(got.text)}, here ${shown(here.text)}`;
  const mine = got.children.filter((c) => !mayDiffer(path, c));
  const theirs = here.children.filter((c) => !mayDiffer(path, c));
  for (let i = 0; i < Math.max(mine.length, theirs.length); i++) {
    const [a, b] = [mine[i], theirs[i]];
    if (!b) return `/${path}/${a.name} is not in the definition here`;
    if (!a) return `/${path}/${b.name} of the definition here is missing`;
    if (a.name !== b.name) return `/${path}/${a.name} is not in the definition here (it has <${b.name}> there)`;
    const d = difference(a, b, `${path}/${a.name}`);
    if (d) return d;
  }
  return undefined;
}

function shown(v: string | undefined): string {
  return v === undefined ? "absent" : JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}...` : v);
}
