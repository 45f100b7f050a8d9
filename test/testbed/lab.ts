/**
 * One experiment's testbed: the namespaces, a run directory per data center, identical VM
 * definitions on both (only the tap names differ), QEMU drivers that start QEMU inside their
 * data center's namespace, and a QMP event recorder per VM (a third monitor socket that only
 * listens, so STOP/RESUME/MIGRATION timestamps are seen whoever drives the migration).
 * With disks, the guests marked `disk` have a qcow2 image per host (mode copy: the agents copy it
 * on every move) that their writer fills with numbered records (test/disks/guest-disk.ts); after
 * a move the source's old image is removed, as the operator does once the VM runs at the
 * destination, so the next move back finds no image in its way.
 * destroy() kills every QEMU and relay it started and removes the namespaces, even after a failure.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import execa from "execa";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { livePid, terminateRunDirs } from "../../lib/hypervisor/pidfile";
import { QemuDriver } from "../../lib/hypervisor/qemu";
import { QmpClient } from "../../lib/hypervisor/qmp";
import { type Experiment, type GuestSpec, guestAppend, hostAddress } from "./experiments";
import { type GuestFiles, guestVm } from "../../lib/guest/guest";
import { checkImage, dataVerdict, ext4Image, printedSeqs } from "../disks/guest-disk";
import { HOSTS, type HostName, tapName, TestbedNetwork } from "./network";

export interface RecordedEvent {
  host: HostName;
  vm: string;
  event: string;
  /** QEMU's own timestamp, wall-clock ms. */
  t: number;
  data: Record<string, unknown>;
}

export interface LabOptions {
  /** Guest RAM (96 MiB is the least the Debian kernel boots with). */
  memoryMib?: number;
  /** Pad TCG guests' RAM against QEMU < 9.0's lost dirty pages (QemuDriverOptions decides the default). */
  tcgDirtyWorkaround?: boolean;
  /** Local disks for the guests marked `disk`: an ext4 image of `mib` MiB holding `dataMib` MiB of data. */
  disks?: { mib: number; dataMib: number };
}

/** Locally administered, unique per guest index, identical on both hosts. */
function guestMac(i: number): string {
  return `52:54:00:00:10:${(i + 0x10).toString(16).padStart(2, "0")}`;
}

/** The guest memory writer's own account: passes of `rateMibS` MiB, longest gap between two (nominally 1000 ms). */
export interface WriterStats {
  rateMibS: number;
  passes: number;
  maxGapMs: number;
}

export class Lab {
  readonly events: RecordedEvent[] = [];
  private readonly monitors: QmpClient[] = [];
  private readonly drivers = new Map<HostName, QemuDriver>();
  private watching = true;

  private constructor(
    readonly exp: Experiment,
    readonly net: TestbedNetwork,
    /** Scratch folder: run dirs, relay sockets, QEMU wrappers. Short, for the 107-byte socket limit. */
    readonly dir: string,
    private readonly defs: Map<HostName, VmDefinition[]>,
    private readonly tcgDirtyWorkaround: boolean | undefined,
  ) {}

  static async create(exp: Experiment, guest: GuestFiles, opts: LabOptions = {}): Promise<Lab> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sip-tb-"));
    let net: TestbedNetwork | undefined;
    try {
      net = await TestbedNetwork.create({ vms: exp.guests.map((g) => g.name), userRoutes: exp.userRoutes });
      // Guests with the UDP echo boot the base initramfs with the socat overlay appended (the kernel unpacks both).
      const withSocat = path.join(dir, "initramfs-socat.gz");
      if (exp.guests.some((g) => g.udpEcho))
        fs.writeFileSync(
          withSocat,
          Buffer.concat([fs.readFileSync(guest.initrd), fs.readFileSync(guest.socatOverlay)]),
        );
      const defs = new Map<HostName, VmDefinition[]>();
      for (const host of HOSTS) {
        const runDir = path.join(dir, host);
        fs.mkdirSync(runDir, { recursive: true });
        defs.set(
          host,
          exp.guests.map((g, i) => {
            const def = guestVm(guest, g.name, {
              memoryMib: opts.memoryMib ?? 96,
              nics: [{ kind: "tap", ifname: tapName(g.name, host), mac: guestMac(i) }],
            });
            def.role = g.role;
            def.append = `${def.append} ${guestAppend(g)}`;
            if (g.udpEcho) def.initrd = withSocat;
            def.extraArgs = ["-qmp", `unix:${path.join(runDir, `${g.name}.ev`)},server=on,wait=off`];
            if (opts.disks && g.disk) {
              def.disks = [{ target: "vda", file: Lab.imageFile(dir, host, g.name), format: "qcow2", mode: "copy" }];
              def.append = `${def.append} st.disk=1`;
            }
            return def;
          }),
        );
        if (opts.disks) fs.mkdirSync(path.dirname(Lab.imageFile(dir, host, "x")), { recursive: true });
      }
      const withDisk = opts.disks ? exp.guests.filter((g) => g.disk) : [];
      for (const g of withDisk)
        await ext4Image(Lab.imageFile(dir, "dc1", g.name), opts.disks!.mib, "qcow2", opts.disks!.dataMib);
      return new Lab(exp, net, dir, defs, opts.tcgDirtyWorkaround);
    } catch (err) {
      await net?.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  runDir(host: HostName): string {
    return path.join(this.dir, host);
  }

  private static imageFile(dir: string, host: HostName, vm: string): string {
    return path.join(dir, `${host}-img`, `${vm}.qcow2`);
  }

  /** Guests with a copied disk in this lab. */
  private diskGuests(): GuestSpec[] {
    return this.exp.guests.filter((g) => this.inventory("dc1").find((d) => d.name === g.name)?.disks.length);
  }

  private serial(host: HostName, vm: string): string {
    return path.join(this.runDir(host), `${vm}.serial.log`);
  }

  /**
   * After a move: each disk guest's writer goes on at the destination (a number past the last one
   * the source's console showed, within `timeoutMs`), and its old image on the source is removed.
   * Returns what went wrong, in words.
   */
  async disksAfterMove(from: HostName, to: HostName, timeoutMs = 5000): Promise<string[]> {
    const problems: string[] = [];
    for (const g of this.diskGuests()) {
      if (this.runningOn(g.name).join() !== to) continue; // the placement check reports it
      const last = Math.max(0, ...printedSeqs(this.serial(from, g.name)));
      const deadline = Date.now() + timeoutMs;
      while (Math.max(0, ...printedSeqs(this.serial(to, g.name))) <= last && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      if (Math.max(0, ...printedSeqs(this.serial(to, g.name))) <= last)
        problems.push(`${g.name}'s disk writer did not go on at ${to} after number ${last}`);
      fs.rmSync(Lab.imageFile(this.dir, from, g.name), { force: true });
    }
    return problems;
  }

  /**
   * The disk guests' data check, at the end: each is stopped where it runs and its image checked
   * (clean filesystem, every record in place up to the last number any console showed). Returns
   * a line per guest and the problems.
   */
  async checkDisks(): Promise<{ lines: string[]; problems: string[] }> {
    const lines: string[] = [];
    const problems: string[] = [];
    for (const g of this.diskGuests()) {
      const [host] = this.runningOn(g.name);
      if (!host) continue;
      await this.driver(host).stop(g.name);
      const printed = Math.max(0, ...HOSTS.flatMap((h) => printedSeqs(this.serial(h, g.name))));
      const check = await checkImage(Lab.imageFile(this.dir, host, g.name), this.dir);
      const verdict = dataVerdict(check, printed);
      const ok = verdict.fsck === 0 && verdict.wrong.length === 0 && verdict.missing === 0;
      lines.push(
        `${g.name} on ${host}: ${check.records} records, last printed ${printed}, ` +
          (ok ? "filesystem clean, every record in place" : `BROKEN ${JSON.stringify(verdict)}`),
      );
      if (!ok) problems.push(`${g.name}'s disk on ${host}: ${JSON.stringify(verdict)}`);
    }
    return { lines, problems };
  }

  inventory(host: HostName): VmDefinition[] {
    return this.defs.get(host) ?? [];
  }

  /** A driver whose QEMUs run inside the host's namespace (for direct migrations without agents). */
  driver(host: HostName): QemuDriver {
    let d = this.drivers.get(host);
    if (!d) {
      const wrapper = path.join(this.dir, `qemu-${host}`);
      fs.writeFileSync(wrapper, `#!/bin/sh\nexec ${this.net.exec(host).join(" ")} qemu-system-x86_64 "$@"\n`, {
        mode: 0o755,
      });
      d = new QemuDriver({
        runDir: this.runDir(host),
        inventory: this.inventory(host),
        qemuBinary: wrapper,
        startTimeoutMs: 20_000,
        tcgDirtyWorkaround: this.tcgDirtyWorkaround,
      });
      this.drivers.set(host, d);
    }
    return d;
  }

  /** Boot every guest on dc1, record its events, and wait until the user can ping each one. */
  async bootAll(timeoutMs = 60_000): Promise<void> {
    const d = this.driver("dc1");
    await Promise.all(this.exp.guests.map((g) => d.start(g.name)));
    for (const g of this.exp.guests) this.watch("dc1", g.name);
    await Promise.all(this.exp.guests.map((g) => this.waitPing(g, timeoutMs)));
  }

  /** Wait until the user can ping every guest (after a guest rebooted, for instance). */
  async waitAllPing(timeoutMs = 60_000): Promise<void> {
    await Promise.all(this.exp.guests.map((g) => this.waitPing(g, timeoutMs)));
  }

  private async waitPing(g: GuestSpec, timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      const r = await execa(
        this.net.exec("user")[0],
        [...this.net.exec("user").slice(1), "ping", "-c1", "-W0.2", "-q", hostAddress(g)],
        { reject: false },
      );
      if (r.exitCode === 0) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(
      `${g.name} (${hostAddress(g)}) did not answer ping within ${timeoutMs} ms (serial log: ` +
        `${path.join(this.runDir("dc1"), `${g.name}.serial.log`)})`,
    );
  }

  /**
   * Record a VM's QMP events on a host, connecting as soon as its event socket exists (the
   * destination's appears when the listener is armed, by us or by an agent).
   */
  watch(host: HostName, vm: string): void {
    const sock = path.join(this.runDir(host), `${vm}.ev`);
    void (async () => {
      while (this.watching) {
        if (fs.existsSync(sock)) {
          try {
            const client = await QmpClient.connect(sock, { timeoutMs: 2000 });
            this.monitors.push(client);
            client.onEvent((ev) =>
              this.events.push({
                host,
                vm,
                event: ev.event,
                t: ev.timestamp.seconds * 1000 + ev.timestamp.microseconds / 1000,
                data: ev.data,
              }),
            );
            return;
          } catch {
            // QEMU created the socket but is not listening yet: try again.
          }
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
  }

  /**
   * The user's view of a guest's uptime (HTTP CGI), in seconds; undefined when it does not answer. (busybox wget -T
   * segfaults here: execa's timeout instead.)
   */
  async uptime(g: GuestSpec): Promise<number | undefined> {
    const m = / up ([\d.]+)s/.exec(await this.httpGet(g, "/cgi-bin/up"));
    return m ? Number(m[1]) : undefined;
  }

  /**
   * The guest's memory writer (build-guest.sh): set its rate in MiB/s (0 stops it) when given, and
   * say how it went; undefined when the guest does not answer.
   */
  async dirty(g: GuestSpec, rateMibS?: number): Promise<WriterStats | undefined> {
    const out = await this.httpGet(g, `/cgi-bin/dirty${rateMibS === undefined ? "" : `?rate=${rateMibS}`}`);
    const m = /^rate (\d+)(?: passes (\d+) maxgap_ms (\d+))?/.exec(out);
    if (!m) return undefined;
    return { rateMibS: Number(m[1]), passes: Number(m[2] ?? 0), maxGapMs: Number(m[3] ?? 0) };
  }

  private async httpGet(g: GuestSpec, urlPath: string): Promise<string> {
    const user = this.net.exec("user");
    const r = await execa(
      user[0],
      [...user.slice(1), "busybox", "wget", "-q", "-O", "-", `http://${hostAddress(g)}${urlPath}`],
      { reject: false, timeout: 5000 },
    );
    return r.stdout;
  }

  /** Hosts where a VM's QEMU runs right now (by pidfile). */
  runningOn(vm: string): HostName[] {
    return HOSTS.filter((h) => livePid(path.join(this.runDir(h), `${vm}.pid`)) !== undefined);
  }

  async destroy(): Promise<void> {
    this.watching = false;
    await Promise.all(this.monitors.map((m) => m.close().catch(() => undefined)));
    await terminateRunDirs(HOSTS.map((h) => this.runDir(h)));
    await this.net.destroy();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
