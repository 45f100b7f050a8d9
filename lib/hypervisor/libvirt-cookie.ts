/**
 * libvirt's migration cookie (qemu_migration_cookie.c) read as a document: the domain it is for
 * and the persistent definition it may carry. Parts this gate does not know are refused. <nbd>
 * (a disk copy: the disks the source will mirror, and their sizes) is read out for the caller
 * to judge against what was armed.
 */
import { childrenNamed, parseLibvirtXml, type XmlElement } from "./libvirt-xml";

const PARTS = new Set([
  "name",
  "uuid",
  "hostname",
  "hostuuid",
  "feature",
  "graphics",
  "lockstate",
  "domain",
  "network",
  "statistics",
  "memory-hotplug",
  "cpu",
  "allowReboot",
  "capabilities",
  "blockDirtyBitmaps",
  "nbd",
]);

export interface MigrationCookie {
  name: string;
  uuid: string;
  /** The persistent definition (feature "persistent"), as a <domain> element. */
  domains: XmlElement[];
  /** The disk targets of an <nbd> part (a copy of those disks), undefined without one. */
  nbd?: string[];
}

export type CookieResult = { ok: true; cookie: MigrationCookie } | { ok: false; why: string };

export function parseMigrationCookie(xml: string): CookieResult {
  // libvirt sends the cookie as a C string: its terminating NUL is part of the opaque bytes
  const doc = parseLibvirtXml(xml.endsWith("\0") ? xml.slice(0, -1) : xml);
  if (!doc.ok) return doc;
  const root = doc.root;
  if (root.name !== "qemu-migration") return { ok: false, why: `its root element is <${root.name}>` };
  const unknown = root.children.find((c) => !PARTS.has(c.name));
  if (unknown) return { ok: false, why: `it has a <${unknown.name}> part` };
  const [names, uuids] = [childrenNamed(root, "name"), childrenNamed(root, "uuid")];
  if (names.length !== 1 || uuids.length !== 1)
    return { ok: false, why: `it has ${names.length} <name> and ${uuids.length} <uuid> elements` };
  const cookie: MigrationCookie = { name: names[0].text, uuid: uuids[0].text, domains: childrenNamed(root, "domain") };
  const nbds = childrenNamed(root, "nbd");
  if (nbds.length > 1) return { ok: false, why: `it has ${nbds.length} <nbd> parts` };
  if (nbds.length) {
    const nbd = readNbd(nbds[0]);
    if (typeof nbd === "string") return { ok: false, why: nbd };
    cookie.nbd = nbd;
  }
  return { ok: true, cookie };
}

/**
 * `<nbd [port='N']><disk target='vda' capacity='BYTES'/>...</nbd>` (qemuMigrationCookieNBDXMLFormat):
 * the targets, or why it is not that.
 */
function readNbd(nbd: XmlElement): string[] | string {
  const odd = [...nbd.attrs.keys()].find((k) => k !== "port");
  if (odd !== undefined) return `its <nbd> has an attribute ${odd}`;
  const targets: string[] = [];
  for (const d of nbd.children) {
    const [target, capacity] = [d.attrs.get("target"), d.attrs.get("capacity")];
    if (d.name !== "disk" || d.children.length || d.attrs.size !== 2 || !target || !/^\d+$/.test(capacity ?? ""))
      return "its <nbd> holds something other than <disk target capacity/>";
    if (targets.includes(target)) return `its <nbd> names disk ${target} twice`;
    targets.push(target);
  }
  return targets;
}
