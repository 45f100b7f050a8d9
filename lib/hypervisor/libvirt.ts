/**
 * libvirt domains, driven through virsh (see virsh.ts for why not a Node binding). The inventory
 * names each VM's domain and the local libvirt's URI; libvirt keeps the domain's definition, so
 * the inventory's memory and vCPUs are what the NRDL offer says and what the receiving side
 * checks against its own domain.
 *
 * Armed, for libvirt, means: this agent listens on the chosen migration port with a TLS-PSK
 * tunnel keyed by the dialog's one-time secret, in front of the local libvirtd socket (and of the
 * incoming QEMU's stream socket, and with copied disks an NBD port keyed by the NBD secret);
 * libvirt itself is not touched. The source's libvirtd reaches it through the source agent's end
 * of the tunnel and runs a managed peer-to-peer migration (protocol v3: libvirt prepares the
 * incoming domain here, the stream goes beside the RPC connection, or inside it when tunnelled).
 * What the secret protects is therefore a libvirt RPC connection with this agent's rights, not
 * one QEMU migration stream: see lib/hypervisor/README.md for what that means and its limits.
 */
import fs from "node:fs";
import path from "node:path";
import { TeleportError } from "../errors";
import { refuseReduction } from "./driver";
import type { CompressMethod, DiskSpec } from "../../nrdl/types";
import { silentLogger, type Logger } from "../log/logger";
import type {
  ArmedListener,
  ArmOptions,
  HypervisorDriver,
  LibvirtDomainRef,
  MigrationHandle,
  MigrationOptions,
  MigrationTarget,
  VmDefinition,
  VmRunState,
} from "./driver";
import { LibvirtMigration, type DiskCopy } from "./libvirt-migration";
import { incomingDomainCheck } from "./libvirt-incoming";
import { dataChannel, listenTunnel, type TunnelServer } from "./libvirt-tunnel";
import { bindWithRetry, freePort, tcpUri } from "./net";
import { CreatedImages, isCopied, vetIncomingDisks } from "./qemu-disks";
import { Virsh, type DomainState } from "./virsh";

export interface LibvirtDriverOptions {
  /** This host's run directory (the tunnels' private sockets). */
  runDir: string;
  inventory: VmDefinition[];
  logger?: Logger;
  /** Default "virsh" from PATH. */
  virsh?: string;
  /**
   * Outgoing migrations: "native" sends the memory on its own TLS-PSK connection to the armed port
   * (`--migrateuri`, see libvirt-tunnel.ts), "tunnelled" (the default) inside libvirt's RPC connection.
   * A destination accepts either.
   */
  stream?: "native" | "tunnelled";
}

type Definition = VmDefinition & { libvirt: LibvirtDomainRef };

interface Armed {
  uri: string;
  tunnel: TunnelServer;
}

/** waitResumed's domstate between lifecycle events (each through the URI's long-lived virsh session). */
const RESUME_POLL_MS = 250;

/** `domstate --reason` of a domain waiting for an incoming migration ("paused (migrating)", "(starting up)"). */
const INCOMING = /migrat|starting up/;

/** The libvirtd socket a local URI names (`?socket=`), else the system daemon's. */
export function libvirtSocket(uri: string): string {
  const m = /[?&]socket=([^&]+)/.exec(uri);
  if (m) return decodeURIComponent(m[1]);
  // modular daemons (virtqemud) where the monolithic libvirtd is not running
  const monolithic = "/run/libvirt/libvirt-sock";
  const modular = "/run/libvirt/virtqemud-sock";
  return !fs.existsSync(monolithic) && fs.existsSync(modular) ? modular : monolithic;
}

/** libvirt's domain state in the driver's words; `armed`: this agent waits for the VM. */
function runState(st: DomainState | undefined, armed: boolean): VmRunState {
  if (!st) return armed ? "incoming" : "absent";
  switch (st.state) {
    case "running":
      return "running";
    case "paused":
      // the destination's copy during an incoming migration
      return armed && INCOMING.test(st.reason) ? "incoming" : "paused";
    case "pmsuspended":
      return "paused";
    case "shut off":
      return armed ? "incoming" : "stopped";
    default:
      return "stopped"; // in shutdown, crashed, blocked
  }
}

/** A migration refused before it began. */
function refusedHandle(refused: TeleportError): MigrationHandle {
  const fail = Promise.reject(refused);
  fail.catch(() => undefined);
  return {
    done: fail,
    readyToSwitch: fail,
    prime: () => fail,
    stop: () => fail,
    switchover: () => fail,
    abort: async () => undefined,
  };
}

/**
 * The source's half of a disk copy: the inventory's copied disks, all copy or all copy-top (libvirt
 * has one flag for every disk it copies), each with its export; undefined without copied disks.
 */
function diskCopy(def: Definition, target: MigrationTarget): DiskCopy | undefined {
  const copied = def.disks.filter(isCopied);
  if (!copied.length) return undefined;
  const modes = new Set(copied.map((d) => d.mode));
  if (modes.size > 1)
    throw new TeleportError(488, `VM ${def.name}: libvirt copies every disk alike, not some copy and some copy-top`);
  const exports = copied.map((d) => target.exports?.find((e) => e.disk === d.target));
  const first = exports[0];
  if (!first || exports.some((e) => !e || e.uri.replace(/\/[^/]*$/, "") !== first.uri.replace(/\/[^/]*$/, "")))
    throw new TeleportError(502, `VM ${def.name}: the destination armed no NBD port for each copied disk`);
  const m = /^nbd:\/\/(?:\[([^\]]+)\]|([^:/]+)):(\d+)\//.exec(first.uri);
  if (!m) throw new TeleportError(502, `VM ${def.name}: not an NBD export URI: ${first.uri}`);
  const channel = dataChannel(first.secret, def.libvirt.domain, libvirtSocket(def.libvirt.uri), "nbd");
  return {
    targets: copied.map((d) => d.target),
    incremental: modes.has("copy-top"),
    disksUri: channel.migrateUri,
    nbd: { host: m[1] ?? m[2], port: Number(m[3]), secret: first.secret, path: channel.localPath },
  };
}

export class LibvirtDriver implements HypervisorDriver {
  readonly kind = "libvirt" as const;
  /** No stream reduction (nrdl/SPEC.md 5.7): its migrations keep the plain stream, and none is accepted for it. */
  readonly compression: ReadonlySet<CompressMethod> = new Set();
  readonly runDir: string;
  private readonly defs: Map<string, VmDefinition & { libvirt: LibvirtDomainRef }>;
  private readonly log: Logger;
  private readonly binary: string;
  private readonly stream: "native" | "tunnelled";
  private readonly armed = new Map<string, Armed>();
  private readonly outgoing = new Map<string, LibvirtMigration>();

  constructor(opts: LibvirtDriverOptions) {
    this.runDir = path.resolve(opts.runDir);
    this.log = opts.logger ?? silentLogger;
    this.binary = opts.virsh ?? "virsh";
    this.stream = opts.stream ?? "native";
    this.defs = new Map(
      opts.inventory
        .filter((d) => d.hypervisor === "libvirt")
        .map((d) => [
          d.name,
          { ...d, libvirt: d.libvirt ?? { uri: "qemu:///system", domain: d.name, defineFromSource: false } },
        ]),
    );
    fs.mkdirSync(this.runDir, { recursive: true });
    this.log.info("libvirt driver", { runDir: this.runDir, vms: this.defs.size });
  }

  async available(): Promise<{ ok: boolean; detail: string }> {
    const uris = [...new Set([...this.defs.values()].map((d) => d.libvirt.uri))];
    const problems: string[] = [];
    let version = "";
    for (const uri of uris.length ? uris : ["qemu:///system"]) {
      try {
        version = (await new Virsh(uri, this.binary).ask(["version", "--daemon"])).split("\n").pop() ?? "";
      } catch (err) {
        problems.push(`${uri}: ${TeleportError.from(err).details.join("; ") || TeleportError.from(err).message}`);
      }
    }
    if (problems.length)
      return {
        ok: false,
        detail: `libvirt not reachable (${problems.join("; ")}); apt-get install libvirt-daemon-system libvirt-clients`,
      };
    return { ok: true, detail: version.trim() };
  }

  inventory(): VmDefinition[] {
    return [...this.defs.values()];
  }

  async state(vm: string): Promise<VmRunState> {
    const def = this.definition(vm);
    return runState(await this.virsh(def).domState(def.libvirt.domain), this.armed.has(vm));
  }

  async start(vm: string): Promise<void> {
    const def = this.definition(vm);
    const st = await this.requireDefined(def);
    if (st.state !== "shut off")
      throw new TeleportError(486, `VM ${vm} (domain ${def.libvirt.domain}) is already ${st.state} on this host`);
    await this.virsh(def).run(["start", def.libvirt.domain]);
    this.log.info(`started ${vm}`, { domain: def.libvirt.domain });
  }

  async stop(vm: string): Promise<void> {
    const def = this.definition(vm);
    if (this.outgoing.has(vm))
      throw new TeleportError(486, `VM ${vm} is migrating out; abort the migration before stopping it`);
    const st = await this.virsh(def).domState(def.libvirt.domain);
    if (!st || st.state === "shut off") return;
    await this.virsh(def).run(["destroy", def.libvirt.domain]);
    this.log.info(`stopped ${vm}`, { domain: def.libvirt.domain });
  }

  async checkIncoming(vm: string): Promise<string | undefined> {
    const def = this.definition(vm);
    const { uri, domain, defineFromSource } = def.libvirt;
    const virsh = this.virsh(def);
    let st: DomainState | undefined;
    try {
      st = await virsh.domState(domain);
    } catch (err) {
      return `libvirt at ${uri} does not answer: ${TeleportError.from(err).details.join("; ")}`;
    }
    if (!st)
      return defineFromSource
        ? undefined
        : `libvirt at ${uri} does not define domain ${domain} ` +
            "(define it like the source's, or set libvirt.defineFromSource)";
    if (st.state !== "shut off") return `domain ${domain} is already ${st.state} on this host`;
    const shape = await virsh.shape(domain);
    const problems: string[] = [];
    if (Math.floor(shape.memoryKib / 1024) !== def.memoryMib)
      problems.push(`domain ${domain} has ${Math.floor(shape.memoryKib / 1024)} MiB, the offer ${def.memoryMib} MiB`);
    if (shape.vcpus !== def.cpus) problems.push(`domain ${domain} has ${shape.vcpus} vCPUs, the offer ${def.cpus}`);
    // a copied disk's image is created by arm(); the others must be on storage both hosts see
    const copied = new Set(def.disks.filter(isCopied).map((d) => d.target));
    for (const { target, source } of shape.disks)
      if (!copied.has(target) && source.startsWith("/") && !fs.existsSync(source))
        problems.push(`disk ${source} of domain ${domain} is missing here (not copied: shared storage)`);
    return problems.length ? problems.join("; ") : undefined;
  }

  /**
   * Copied disks as the QEMU driver vets them (qemu-disks.ts: no file at the image's path, room
   * for it, copy-top's base), and each one a disk of the domain here.
   */
  async vetDisks(vm: string, disks: DiskSpec[]): Promise<string[]> {
    const def = this.definition(vm);
    const problems = vetIncomingDisks(def, disks);
    const copied = disks.filter(isCopied);
    if (!copied.length || !(await this.virsh(def).domState(def.libvirt.domain))) return problems;
    const targets = new Set((await this.virsh(def).shape(def.libvirt.domain)).disks.map((d) => d.target));
    for (const d of copied)
      if (!targets.has(d.target)) problems.push(`disk ${d.target}: domain ${def.libvirt.domain} has no such disk here`);
    return problems;
  }

  async arm(vm: string, opts: ArmOptions): Promise<ArmedListener> {
    refuseReduction(this.kind, vm, opts);
    const def = this.definition(vm);
    if (this.armed.has(vm)) throw new TeleportError(486, `VM ${vm} is already armed here`);
    // a move back right after one from here: libvirt may still be removing the copy it left (Confirm)
    await this.outgoing.get(vm)?.gone;
    const why = await this.checkIncoming(vm);
    if (why) throw new TeleportError(488, `VM ${vm} cannot be received here`, [why]);
    const { domain } = def.libvirt;
    const local = (await this.virsh(def).domState(domain)) ? await this.virsh(def).migratable(domain) : undefined;
    const socket = libvirtSocket(def.libvirt.uri);
    const data = dataChannel(opts.secret, domain, socket);
    const copied = (opts.disks ?? []).filter(isCopied);
    const nbd = copied.length ? await this.armDisks(vm, def, copied, opts) : undefined;
    let bound: { tunnel: TunnelServer; port: number; nbdPort: number | undefined };
    let binds = 0;
    try {
      bound = await bindWithRetry(opts.address, opts.port, opts.anotherPort, async (port) => {
        // both ports bind together: after a clash, whichever it was, the NBD port moves too
        const nbdPort =
          nbd && (binds++ === 0 ? nbd.port : ((await opts.anotherPort?.()) ?? (await freePort(opts.address))));
        const tunnel = await listenTunnel({
          address: opts.address,
          port,
          secret: opts.secret,
          libvirtSocket: socket,
          check: incomingDomainCheck(domain, local, data.migrateUri, nbd?.armed),
          dataPath: data.localPath,
          nbd: nbd && nbdPort !== undefined ? { ...nbd.listen, port: nbdPort } : undefined,
          onRefused: (reason) => this.log.warn(`refused on the armed ports of ${vm}`, { port, reason }),
          onProcedures: (procedures) =>
            this.log.debug(`migration calls through the armed port of ${vm}`, { procedures }),
        });
        return { tunnel, port, nbdPort };
      });
    } catch (err) {
      this.images(vm).remove();
      throw err;
    }
    const { tunnel, port } = bound;
    const uri = tcpUri(opts.address, port);
    this.armed.set(vm, { uri, tunnel });
    this.virsh(def).followLifecycle(); // connected before the arrival resumes: waitResumed hears it
    this.log.info(`armed ${vm}`, { uri, domain: def.libvirt.domain, copiedDisks: copied.length });
    return { vm, uri, exports: nbd && bound.nbdPort !== undefined ? nbd.exportsAt(bound.nbdPort) : [] };
  }

  /**
   * Copied disks: their images created here (all or none, written down first: qemu-disks.ts), and
   * the NBD port in front of the NBD server libvirtd will have the incoming QEMU start on a
   * Unix socket named from the NBD secret.
   */
  private async armDisks(vm: string, def: Definition, copied: DiskSpec[], opts: ArmOptions) {
    if (!opts.nbdSecret) throw new TeleportError(500, `VM ${vm}: copied disks need an NBD secret`);
    const nbdPort = opts.nbdPort ?? (await freePort(opts.address));
    const channel = dataChannel(opts.nbdSecret, def.libvirt.domain, libvirtSocket(def.libvirt.uri), "nbd");
    await this.images(vm).create(def, copied);
    const targets = copied.map((d) => d.target);
    const secret = opts.nbdSecret;
    return {
      armed: { uri: channel.migrateUri, targets },
      port: nbdPort,
      listen: { secret, path: channel.localPath, connections: targets.length },
      /** What the answer says of the disks, once the port is bound (a clash moves it). */
      exportsAt: (port: number) => {
        const host = tcpUri(opts.address, port).slice("tcp:".length);
        return targets.map((disk) => ({ disk, uri: `nbd://${host}/${disk}`, secret }));
      },
    };
  }

  /** The images arming created for `vm`'s copied disks (deleted unless it arrived). */
  private images(vm: string): CreatedImages {
    return new CreatedImages(path.join(this.runDir, `${vm}.created-images.json`));
  }

  async disarm(vm: string): Promise<void> {
    const def = this.definition(vm);
    const st = await this.virsh(def).domState(def.libvirt.domain);
    // the VM arrived: it is the only copy now
    if (st?.state === "running" && st.reason !== "migration")
      throw new TeleportError(486, `VM ${vm} is running here, not waiting for a migration: not disarming it`);
    await this.closeTunnel(vm);
    if (st?.state === "paused" && INCOMING.test(st.reason)) {
      // libvirt keeps an incoming copy whose source vanished mid-stream (the source agent, and
      // with it the tunnel, killed) waiting for ever. It is never the VM: libvirt's source keeps
      // its copy until the destination's Finish succeeded, and resumes it when Finish fails.
      await this.virsh(def)
        .run(["destroy", def.libvirt.domain])
        .catch((err: unknown) =>
          this.log.warn(`could not remove the incoming copy of ${vm}`, { error: TeleportError.from(err).message }),
        );
    }
    const removed = this.images(vm).remove(); // the VM did not arrive: only the images its arming created
    if (removed.length) this.log.info(`removed the images created for ${vm}`, { files: removed });
    this.log.info(`disarmed ${vm}`);
  }

  /**
   * libvirt's lifecycle events wake this at once when the arrival starts or resumes; domstate through
   * the URI's session decides, and is asked again every RESUME_POLL_MS in case an event was missed
   * (the stream restarting with libvirtd) or the VM was disarmed meanwhile.
   */
  async waitResumed(vm: string, timeoutMs: number): Promise<void> {
    const def = this.definition(vm);
    const deadline = Date.now() + timeoutMs;
    let wake: (() => void) | undefined;
    let woken = false; // an event while domstate was being asked: ask again at once
    const off = this.virsh(def).onLifecycle(def.libvirt.domain, (event) => {
      if (event !== "Resumed" && event !== "Started") return;
      woken = true;
      wake?.();
    });
    try {
      for (;;) {
        const st = await this.virsh(def).domState(def.libvirt.domain);
        if (st?.state === "running") {
          this.images(vm).keep(); // its disks now
          return await this.closeTunnel(vm);
        }
        const armed = this.armed.get(vm);
        if (!armed)
          throw new TeleportError(503, `VM ${vm} is not here and nothing waits for it (${st?.state ?? "not defined"})`);
        if (Date.now() > deadline)
          throw new TeleportError(
            504,
            `VM ${vm} did not resume here within ${timeoutMs} ms (${st?.state ?? "absent"})`,
          );
        if (!woken)
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, RESUME_POLL_MS);
            wake = () => (clearTimeout(timer), resolve());
          });
        wake = undefined;
        woken = false;
      }
    } finally {
      off();
    }
  }

  migrate(vm: string, target: MigrationTarget, opts: MigrationOptions): MigrationHandle {
    const def = this.definition(vm);
    if (this.outgoing.has(vm)) return refusedHandle(new TeleportError(486, `VM ${vm} is already migrating`));
    let disks: DiskCopy | undefined;
    try {
      disks = diskCopy(def, target);
    } catch (err) {
      return refusedHandle(TeleportError.from(err));
    }
    const migration = new LibvirtMigration(
      {
        vm,
        domain: def.libvirt.domain,
        virsh: this.virsh(def),
        tunnelDir: path.join(this.runDir, `${vm}.tunnel-${process.pid}-${Date.now().toString(36)}`),
        data:
          this.stream === "native"
            ? dataChannel(target.secret, def.libvirt.domain, libvirtSocket(def.libvirt.uri))
            : undefined,
        disks,
        log: this.log,
        settled: () => {
          if (this.outgoing.get(vm) === migration) this.outgoing.delete(vm);
        },
      },
      target,
      opts,
    );
    this.outgoing.set(vm, migration);
    return migration;
  }

  private virsh(def: { libvirt: LibvirtDomainRef }): Virsh {
    return new Virsh(def.libvirt.uri, this.binary);
  }

  private definition(vm: string): Definition {
    const def = this.defs.get(vm);
    if (!def) throw new TeleportError(404, `VM ${vm} is not defined in this host's inventory`);
    return def;
  }

  private async requireDefined(def: VmDefinition & { libvirt: LibvirtDomainRef }): Promise<DomainState> {
    const st = await this.virsh(def).domState(def.libvirt.domain);
    if (!st)
      throw new TeleportError(404, `libvirt at ${def.libvirt.uri} does not define domain ${def.libvirt.domain}`, [
        `virsh -c ${def.libvirt.uri} define DOMAIN.xml`,
      ]);
    return st;
  }

  private async closeTunnel(vm: string): Promise<void> {
    const a = this.armed.get(vm);
    this.armed.delete(vm);
    await a?.tunnel.close();
  }
}
