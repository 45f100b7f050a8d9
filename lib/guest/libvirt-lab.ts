/**
 * Two real libvirt hosts on this machine, for the libvirt driver's tests and bench:driver: each
 * libvirtd (with its virtlogd) in a network namespace and a mount namespace of its own, with a
 * host_uuid of its own (libvirtd-host.sh). Names carry the pid and a random suffix: other runs
 * share the machine. The test guest is defined in both as the same libvirt domain (same name and
 * UUID, like an operator's two hosts), plain TCG with no devices beyond a serial port.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import execa from "execa";
import { closeVirshSessions, Virsh } from "../hypervisor/virsh";
import { repoRoot } from "../version";
import { ensureGuest, type GuestFiles } from "./guest";

const SCRIPT = path.join(repoRoot(), "lib", "guest", "libvirtd-host.sh");
/**
 * libvirtd probes QEMU's capabilities (~4 s) on the first domain it defines, once per cache: a lab's
 * daemons start with a copy of the last probe (libvirtd re-probes by itself when QEMU or libvirt changed).
 */
const CAPS_SEED = path.join(repoRoot(), ".cache", "libvirt-qemu-capabilities");
/** The lab's QEMU: pads guest RAM past libvirt's whole MiB (QEMU 7.2's TCG migration bug, see the script). */
export const LAB_EMULATOR = path.join(repoRoot(), "lib", "guest", "qemu-tcg-padded.sh");

/** The first host's probe, kept as every later host's starting cache. */
async function seedCapabilities(host: LibvirtHost): Promise<void> {
  // libvirt names a probe by the sha256 of the emulator's path
  const probe = `${crypto.createHash("sha256").update(LAB_EMULATOR).digest("hex")}.xml`;
  if (fs.existsSync(path.join(CAPS_SEED, probe))) return;
  await host.virsh.run(["domcapabilities", "--emulatorbin", LAB_EMULATOR]);
  const probed = path.join(host.dir, "cache", "qemu", "capabilities");
  fs.mkdirSync(CAPS_SEED, { recursive: true });
  for (const f of fs.readdirSync(probed)) fs.copyFileSync(path.join(probed, f), path.join(CAPS_SEED, f));
}

export interface LibvirtHost {
  name: "dc1" | "dc2";
  dir: string;
  uri: string;
  virsh: Virsh;
  /** Stop libvirtd (its domains run on) and start it again in the same namespaces. */
  restart(): Promise<void>;
}

export interface LibvirtLab {
  dc1: LibvirtHost;
  dc2: LibvirtHost;
  guest: GuestFiles;
  /** Destroy every running domain on both hosts (between tests: idle TCG guests still cost CPU). */
  reset(): Promise<void>;
  close(): Promise<void>;
}

export async function startLibvirtLab(): Promise<LibvirtLab> {
  const guest = await ensureGuest();
  const tag = `${process.pid}-${crypto.randomBytes(3).toString("hex")}`;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), `stlv-${tag}-`));
  const up: LibvirtHost[] = [];
  const close = async () => {
    await Promise.all(up.map((h) => execa("bash", [SCRIPT, "down", h.dir], { reject: false })));
    for (const h of up) closeVirshSessions(h.uri);
    // SIP_TELEPORT_KEEP_LAB=1: the hosts' libvirtd and QEMU logs stay for a post-mortem
    if (process.env.SIP_TELEPORT_KEEP_LAB) process.stderr.write(`libvirt lab kept in ${base}\n`);
    else fs.rmSync(base, { recursive: true, force: true });
  };
  try {
    for (const name of ["dc1", "dc2"] as const) {
      const dir = path.join(base, name);
      const host: LibvirtHost = {
        name,
        dir,
        uri: `qemu:///system?socket=${dir}/run/libvirt-sock`,
        virsh: new Virsh(`qemu:///system?socket=${dir}/run/libvirt-sock`),
        restart: async () => void (await execa("bash", [SCRIPT, "restart", dir])),
      };
      up.push(host);
      await execa("bash", [SCRIPT, "up", dir, `stlv-${tag}-${name}`, CAPS_SEED]);
      await seedCapabilities(host);
    }
  } catch (err) {
    await close();
    throw err;
  }
  const reset = async () => {
    await Promise.all(up.map(async (h) => Promise.all((await running(h)).map((d) => h.virsh.run(["destroy", d])))));
  };
  return { dc1: up[0], dc2: up[1], guest, reset, close };
}

/**
 * The test guest as a libvirt domain; `uuid` identical on both hosts; `serialLog`: its console to
 * a file (appended to: both hosts' QEMUs write the one file); `extra.disk`: a qcow2 image as vda,
 * which the guest's disk writer uses (st.disk=1, test/disks/guest-disk.ts); `extra.append`: more
 * of the kernel command line (st.dirty=MIBS).
 */
export function domainXml(
  guest: GuestFiles,
  name: string,
  uuid: string,
  memoryMib = 96,
  cpus = 1,
  serialLog?: string,
  extra: { disk?: string; append?: string } = {},
): string {
  const { disk } = extra;
  const args = ["console=ttyS0 quiet panic=-1 init_on_free=1", `st.name=${name}`, disk && "st.disk=1", extra.append];
  const cmdline = args.filter(Boolean).join(" ");
  const serial = serialLog
    ? `<serial type='file'><source path='${serialLog}' append='on'/></serial>`
    : "<serial type='pty'/>";
  const drive = disk
    ? `<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${disk}'/>` +
      "<target dev='vda' bus='virtio'/></disk>"
    : "";
  return `<domain type='qemu'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <memory unit='KiB'>${memoryMib * 1024}</memory>
  <vcpu>${cpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${guest.kernel}</kernel>
    <initrd>${guest.initrd}</initrd>
    <cmdline>${cmdline}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>${LAB_EMULATOR}</emulator>
    ${drive}
    ${serial}
    <memballoon model='none'/>
  </devices>
</domain>`;
}

/** Define `name` in a host's libvirt (written to its dir, as an operator would with virsh define). */
export async function defineDomain(host: LibvirtHost, xml: string): Promise<void> {
  const file = path.join(host.dir, `define-${crypto.randomBytes(4).toString("hex")}.xml`);
  fs.writeFileSync(file, xml);
  await host.virsh.run(["define", file]);
}

/** Every active domain of a host, paused ones too. */
const running = async (h: LibvirtHost) => (await h.virsh.run(["list", "--name"])).split("\n").filter(Boolean);
/**
 * Domains whose vCPUs run. Not the paused ones: after a move the source's stopped copy stays
 * active while libvirt's Confirm removes it, which the driver does not wait for.
 */
const runningNow = async (h: LibvirtHost) =>
  (await h.virsh.run(["list", "--name", "--state-running"])).split("\n").filter(Boolean);

/** Where each domain runs, asked of libvirt itself: the invariant is exactly one host per VM. */
export async function domainPlacement(lab: LibvirtLab, names: string[]): Promise<Record<string, string[]>> {
  const [on1, on2] = await Promise.all([runningNow(lab.dc1), runningNow(lab.dc2)]);
  return Object.fromEntries(
    names.map((n) => [n, [on1.includes(n) && "dc1", on2.includes(n) && "dc2"].filter((h): h is string => !!h)]),
  );
}
