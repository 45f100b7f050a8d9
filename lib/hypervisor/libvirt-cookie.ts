/**
 * libvirt's migration cookie (qemu_migration_cookie.c) read as a document: the domain it is for
 * and the persistent definition it may carry. Parts this gate does not know are refused, and so
 * is <nbd> (a disk copy, which a tunnelled migration cannot carry and the driver never asks for).
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
]);

export interface MigrationCookie {
  name: string;
  uuid: string;
  /** The persistent definition (feature "persistent"), as a <domain> element. */
  domains: XmlElement[];
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
  return {
    ok: true,
    cookie: { name: names[0].text, uuid: uuids[0].text, domains: childrenNamed(root, "domain") },
  };
}
