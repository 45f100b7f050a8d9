/**
 * What the armed port lets in: the migration of `domain`, as this host defines it, and nothing
 * else. Every domain definition a migration call carries (the live XML, a persistent one, the one
 * inside the cookie) is parsed and compared whole with the local definition (libvirt-domain-xml.ts):
 * the secret cannot start another domain here, another binary, or a domain on other host resources.
 */
import { checkDomainElement, domainMismatch, parseDomain } from "./libvirt-domain-xml";
import { parseMigrationCookie } from "./libvirt-cookie";
import { PREPARE3_PARAMS, PREPARE_TUNNEL3_PARAMS, type MigrationCall, type ParamsCheck } from "./libvirt-rpc-gate";
import { child, type XmlElement } from "./libvirt-xml";

/** The string parameters a p2p tunnelled migration sends the destination (others: a disk copy, a listen address). */
const STRING_PARAMS = new Set(["destination_xml", "persistent_xml", "destination_name"]);
/** A copy's string parameter beside `migrate_disks`: where the destination's QEMU serves the disks (NBD). */
const DISKS_URI = "disks_uri";

/** A native migration that may copy disks: its NBD server's URI, and the targets of the disks armed to be copied. */
export interface ArmedDisks {
  uri: string;
  targets: string[];
}

/**
 * Why a call's disk copy is not the one armed, or undefined (no copy, or exactly it). A copy must
 * name its disks (without `migrate_disks` libvirt copies every disk it deems local) and the armed
 * NBD URI (without one libvirtd's NBD server listens on a TCP port of its choice, past the agents).
 */
function diskCopyProblem(call: MigrationCall, cookieNbd: string[] | undefined, disks?: ArmedDisks): string | undefined {
  const asked = call.params.get(DISKS_URI);
  const named = call.disks ?? [];
  if (!named.length && asked === undefined && !cookieNbd) return undefined;
  if (!disks) return "asks for a disk copy, which this dialog did not arm";
  if (asked !== disks.uri) return `asks QEMU to serve its disks on ${asked ?? "a port of libvirtd's choice"}`;
  const listed = [...new Set(named)].sort();
  if (listed.length !== named.length || listed.join() !== [...disks.targets].sort().join())
    return `copies disks ${named.join(", ") || "(unnamed: every local one)"}, armed for ${disks.targets.join(", ")}`;
  const stray = cookieNbd?.find((t) => !disks.targets.includes(t));
  return stray && `its migration cookie copies disk ${stray}, armed for ${disks.targets.join(", ")}`;
}

/**
 * `local`: the domain's `virsh dumpxml --migratable` here; undefined when this host does not define it.
 * `migrateUri`: the one data URI a native (not tunnelled) migration may have QEMU listen on here;
 * without it only tunnelled migration passes.
 */
export function incomingDomainCheck(
  domain: string,
  local: XmlElement | undefined,
  migrateUri?: string,
  disks?: ArmedDisks,
): ParamsCheck {
  const localUuid = local && child(local, "uuid")?.text;
  const judge = (el: XmlElement, what: string): string | undefined => {
    const name = child(el, "name")?.text ?? "";
    if (name !== domain) return `${what} is domain ${name || "(unnamed)"}, armed for ${domain}`;
    const uuid = child(el, "uuid")?.text;
    if (localUuid && uuid !== localUuid) return `${what} has UUID ${uuid ?? "(none)"}, ${domain} here ${localUuid}`;
    const why = domainMismatch(el, local);
    return why && `${what} is not ${domain} as defined here: ${why}`;
  };
  const judgeXml = (xml: string, what: string): string | undefined => {
    const parsed = parseDomain(xml);
    return parsed.ok ? judge(parsed.domain, what) : `${what} is not a domain definition: ${parsed.why}`;
  };
  return (call: MigrationCall) => {
    // native: QEMU listens on migrate_uri, which must be the one armed (absent, libvirtd would pick a TCP port)
    const native =
      call.procedure === PREPARE3_PARAMS ||
      (call.procedure !== PREPARE_TUNNEL3_PARAMS && call.params.has("migrate_uri"));
    const odd = [...call.params.keys()].find(
      (k) => !STRING_PARAMS.has(k) && !(native && (k === "migrate_uri" || (disks && k === DISKS_URI))),
    );
    if (odd !== undefined) return `carries the parameter ${odd}, which a tunnelled migration does not send`;
    if (native && !migrateUri) return "asks for a native migration, armed for tunnelled only";
    const asked = call.params.get("migrate_uri");
    if (native && asked !== migrateUri)
      return `asks QEMU to listen on ${asked ?? "a port of libvirtd's choice"}, armed for ${migrateUri}`;
    const prepare = call.procedure === PREPARE_TUNNEL3_PARAMS || call.procedure === PREPARE3_PARAMS;
    const name = call.params.get("destination_name");
    if (name !== undefined && name !== domain) return `renames the domain to ${name}`;
    const xml = call.params.get("destination_xml");
    if (prepare && !xml) return "carries no domain XML";
    // libvirtd 9.0 was seen to crash on a prepare call without one
    if (prepare && !call.cookie) return "carries no migration cookie";
    const persistent = call.params.get("persistent_xml");
    const problem =
      (xml && judgeXml(xml, "the domain XML")) || (persistent && judgeXml(persistent, "the persistent XML"));
    if (problem) return problem;
    const cookie = call.cookie ? parseMigrationCookie(call.cookie) : undefined;
    if (cookie && !cookie.ok) return `the migration cookie is not one: ${cookie.why}`;
    const copy = diskCopyProblem(call, cookie?.cookie.nbd, native ? disks : undefined);
    if (copy || !cookie) return copy;
    if (cookie.cookie.name !== domain)
      return `the migration cookie is for domain ${cookie.cookie.name}, armed for ${domain}`;
    if (localUuid && cookie.cookie.uuid !== localUuid)
      return `the migration cookie has UUID ${cookie.cookie.uuid}, ${domain} here ${localUuid}`;
    for (const d of cookie.cookie.domains) {
      const one = checkDomainElement(d);
      const why = one.ok ? judge(d, "the cookie's domain") : `the cookie's domain is not a definition: ${one.why}`;
      if (why) return why;
    }
    return undefined;
  };
}
