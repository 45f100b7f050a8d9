/**
 * The libvirt tests' helpers on top of the two-libvirtd lab (lib/guest/libvirt-lab.ts): the test
 * guest defined alike on both hosts, with its inventory entries.
 */
import crypto from "node:crypto";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { defineDomain, domainXml, type LibvirtHost, type LibvirtLab } from "../../lib/guest/libvirt-lab";
import type { Role } from "../../nrdl/types";

export * from "../../lib/guest/libvirt-lab";

/** Define each VM in both hosts alike, and the matching inventory entries per host. */
export async function libvirtVms(
  lab: LibvirtLab,
  vms: Array<[string, Role]>,
): Promise<{ dc1: VmDefinition[]; dc2: VmDefinition[] }> {
  for (const [name] of vms) {
    const xml = domainXml(lab.guest, name, crypto.randomUUID());
    await defineDomain(lab.dc1, xml);
    await defineDomain(lab.dc2, xml);
  }
  const defs = (h: LibvirtHost) =>
    vms.map(([name, role]): VmDefinition => ({
      name,
      hypervisor: "libvirt",
      role,
      memoryMib: 96,
      cpus: 1,
      nics: [],
      disks: [],
      libvirt: { uri: h.uri, domain: name, defineFromSource: false },
    }));
  return { dc1: defs(lab.dc1), dc2: defs(lab.dc2) };
}
