/**
 * The hypervisor drivers the test guests can run on. A new driver (libvirt) is one entry in
 * DRIVERS: how to describe the test guest for it. The agents pick each VM's driver from its
 * definition's `hypervisor`, as in production. `SIP_TELEPORT_TEST_DRIVER=<kind>` switches the suites.
 */
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { ensureGuest, guestVm } from "../../lib/guest/guest";
import type { Role } from "../../nrdl/types";
import { pick } from "./backends";

interface GuestOptions {
  memoryMib: number;
}

/** Definitions of the test guest (built once into .cache/) under the given names. */
type DriverGuests = (names: string[], opts: GuestOptions) => Promise<VmDefinition[]>;

const DRIVERS = {
  qemu: async (names, opts) => {
    const guest = await ensureGuest();
    return names.map((name) => guestVm(guest, name, opts));
  },
} satisfies Record<string, DriverGuests>;

export type DriverKind = keyof typeof DRIVERS;

/** The driver a test run uses: SIP_TELEPORT_TEST_DRIVER, QEMU by default. */
export function defaultDriver(): DriverKind {
  return pick(DRIVERS, process.env.SIP_TELEPORT_TEST_DRIVER ?? "qemu", "SIP_TELEPORT_TEST_DRIVER");
}

/** Test guests with roles: 96 MiB (the least the Debian kernel boots with) on the chosen driver. */
export async function guestDefs(
  vms: Array<[string, Role]>,
  opts: { memoryMib?: number; driver?: DriverKind } = {},
): Promise<VmDefinition[]> {
  const defs = await DRIVERS[opts.driver ?? defaultDriver()](
    vms.map(([name]) => name),
    { memoryMib: opts.memoryMib ?? 96 },
  );
  return defs.map((d, i) => ({ ...d, role: vms[i][1] }));
}
