/**
 * The tiny guest (Debian cloud kernel + busybox initramfs, see build-guest.sh), built once into
 * .cache/guest/ and shared by the demo, the tests and the benchmarks.
 */
import path from "node:path";
import execa from "execa";
import type { NicDefinition, VmDefinition } from "../hypervisor/driver";
import { repoRoot } from "../version";

export interface GuestFiles {
  kernel: string;
  initrd: string;
  /** cpio overlay with socat, appended to `initrd` for guests that serve the UDP echo (st.udpecho=). */
  socatOverlay: string;
}

/** Build the guest when it is not cached yet (a few seconds, needs apt's package lists). */
export async function ensureGuest(): Promise<GuestFiles> {
  const root = repoRoot();
  const out = path.join(root, ".cache", "guest");
  await execa("bash", [path.join(root, "lib", "guest", "build-guest.sh"), out], { stdio: "inherit" });
  return {
    kernel: path.join(out, "vmlinuz"),
    initrd: path.join(out, "initramfs.gz"),
    socatOverlay: path.join(out, "socat.cpio.gz"),
  };
}

export interface GuestVmOptions {
  memoryMib?: number;
  nics?: NicDefinition[];
  /** Guest address for st.ip= (with prefix length), when it has a NIC. */
  ip?: string;
}

/** A QEMU definition of the test guest; 96 MiB is the least the Debian kernel boots with. */
export function guestVm(guest: GuestFiles, name: string, opts: GuestVmOptions = {}): VmDefinition {
  const ip = opts.ip ? ` st.ip=${opts.ip}` : "";
  return {
    name,
    hypervisor: "qemu",
    role: "server",
    memoryMib: opts.memoryMib ?? 96,
    cpus: 1,
    kernel: guest.kernel,
    initrd: guest.initrd,
    append: `console=ttyS0 quiet panic=-1 init_on_free=1 st.name=${name}${ip}`,
    disks: [],
    nics: opts.nics ?? [],
  };
}
