/**
 * bench:driver's baseline: what a libvirt user runs instead of sip-teleport — plain
 * `virsh migrate --live --p2p --persistent DOMAIN DEST-URI`, native (no `--tunnelled`, no agent, no
 * tunnel, no gate), one virsh process per move, between the lab's two libvirtd.
 *
 * The lab's libvirtd each live in a network namespace of their own with only `lo`
 * (lib/guest/libvirtd-host.sh), so QEMU's default `tcp:` migration URI cannot work there: the source
 * QEMU's 127.0.0.1 is not the destination's ("Connection refused"). Two things were needed:
 * - the destination URI as `qemu+unix:///system?socket=...`: with plain `qemu:///system?socket=`
 *   libvirt takes it for the local host and refuses ("Attempt to migrate guest to the same host");
 * - `--migrateuri unix:///PATH` on a path both mount namespaces see: the destination QEMU listens on
 *   it, the source QEMU connects to it, nothing in between (libvirt >= 6.7, migration over UNIX sockets).
 */
import path from "node:path";
import type { ArmedListener, MigrationOptions, MigrationResult } from "../../lib/hypervisor/driver";
import type { LibvirtHost } from "../../lib/guest/libvirt-lab";
import { parseJobInfo } from "../../lib/hypervisor/virsh";

/** What bench:driver asks of a host: the HypervisorDriver calls it makes, the libvirt and QEMU drivers included. */
export interface BenchHost {
  start(vm: string): Promise<void>;
  stop(vm: string): Promise<void>;
  arm(vm: string, opts: { address: string; secret: string }): Promise<Pick<ArmedListener, "uri">>;
  migrate(
    vm: string,
    target: { uri: string; secret: string },
    opts: MigrationOptions,
  ): { done: Promise<MigrationResult> };
  waitResumed(vm: string, timeoutMs: number): Promise<void>;
}

/** Unix socket paths are limited to 107 bytes: the lab's folder is short (/tmp/stlv-PID-HEX-XXXXXX/). */
let sockets = 0;

export class PlainVirshHost implements BenchHost {
  /** The host every migrate() goes to: set once both exist. */
  peer: PlainVirshHost | undefined;

  constructor(readonly host: LibvirtHost) {}

  async start(vm: string): Promise<void> {
    await this.host.virsh.run(["start", vm]);
  }

  async stop(vm: string): Promise<void> {
    await this.host.virsh.run(["destroy", vm]);
  }

  /** Nothing to arm in libvirt's native migration: the destination's libvirtd has QEMU listen on the path. */
  async arm(vm: string): Promise<Pick<ArmedListener, "uri">> {
    return { uri: `unix://${path.join(path.dirname(this.host.dir), `m${++sockets}-${vm}.sock`)}` };
  }

  migrate(vm: string, target: { uri: string }): { done: Promise<MigrationResult> } {
    const done = (async (): Promise<MigrationResult> => {
      const peer = this.peer;
      if (!peer) throw new Error("plain virsh: no destination host");
      const dest = peer.host.uri.replace(/^qemu:/, "qemu+unix:");
      await this.host.virsh.run(["migrate", "--live", "--p2p", "--persistent", vm, dest, "--migrateuri", target.uri]);
      // a process each, as a user's virsh would be (not the driver's long-lived session)
      const info = parseJobInfo(await this.host.virsh.run(["domjobinfo", "--completed", vm]));
      const num = (k: string) => {
        const v = info.get(k);
        return typeof v === "number" ? v : -1;
      };
      return {
        vm,
        totalMs: num("Time elapsed"),
        downtimeMs: num("Total downtime"),
        transferredBytes: num("Data processed"),
      };
    })();
    return { done };
  }

  /** `virsh migrate` returns once the destination's Finish resumed the domain: one look confirms it. */
  async waitResumed(vm: string): Promise<void> {
    const st = (await this.host.virsh.run(["domstate", vm])).trim();
    if (st !== "running") throw new Error(`plain virsh: ${vm} is ${st} after its migration`);
  }
}

/** The lab's two libvirtd as plain-virsh hosts, each migrating to the other. */
export function plainVirshPair(dc1: LibvirtHost, dc2: LibvirtHost): { dc1: PlainVirshHost; dc2: PlainVirshHost } {
  const a = new PlainVirshHost(dc1);
  const b = new PlainVirshHost(dc2);
  a.peer = b;
  b.peer = a;
  return { dc1: a, dc2: b };
}
