/**
 * VirtualBox teleporting through VBoxManage, as the thesis did it.
 *
 * NOT RUN AGAINST A REAL VIRTUALBOX HERE: VirtualBox is not installable on the project's machines.
 * This driver follows the documented VBoxManage contract (VirtualBox 6/7) and is tested against a
 * fake VBoxManage (test/fixtures/) that plays back what VirtualBox 7 prints:
 *   destination: modifyvm VM --teleporter on --teleporterport P --teleporteraddress A
 *                  --teleporterpasswordfile F; startvm VM --type headless (state "teleportingin")
 *   source:      controlvm VM teleport --host H --port P --passwordfile F --maxdowntime MS
 *                  (progress "0%...10%...100%" on stderr; SIGINT cancels it)
 *   state:       showvminfo VM --machinereadable (VMState="...")
 * VBoxManage always runs with an argument array (execa, never a shell). The secret only ever
 * travels through a mode-0600 password file that is removed as soon as VBoxManage exits.
 * VirtualBox reports neither downtime nor bytes: those come back as -1. It cannot cap bandwidth
 * nor pause before switchover.
 */
import fs from "node:fs";
import path from "node:path";
import execa from "execa";
import { TeleportError } from "../errors";
import { maskSecrets, silentLogger, type Logger } from "../log/logger";
import { refuseReduction } from "./driver";
import type {
  ArmedListener,
  ArmOptions,
  HypervisorDriver,
  MigrationHandle,
  MigrationOptions,
  MigrationPhase,
  MigrationResult,
  MigrationTarget,
  VmDefinition,
  VmRunState,
} from "./driver";
import { freePort, tcpUri } from "./net";
import type { CompressMethod } from "../../nrdl/types";

export interface VirtualBoxDriverOptions {
  /** Where short-lived password files live (a private sub-folder is made per use). */
  runDir: string;
  inventory: VmDefinition[];
  logger?: Logger;
  /** Default "VBoxManage" from PATH. */
  vboxManage?: string;
  /** How often state is polled while waiting (default 200 ms). */
  pollMs?: number;
  /** How long arm() waits for "teleportingin" (default 30 s). */
  armTimeoutMs?: number;
}

/** VirtualBox 7 machine states (showvminfo --machinereadable VMState) in the driver's words. */
export function vboxRunState(vmState: string): VmRunState {
  switch (vmState) {
    case "running":
    case "teleporting": // outgoing teleport: still running here until it completes
    case "livesnapshotting":
    case "onlinesnapshotting":
      return "running";
    case "teleportingin":
      return "incoming";
    case "poweroff":
    case "aborted":
    case "teleported":
      return "absent";
    case "saved":
    case "aborted-saved":
    case "stuck":
    case "gurumeditation":
      return "stopped";
    default:
      return "paused"; // paused, starting, stopping, saving, restoring, teleportingpausedvm, ...
  }
}

/** "tcp:HOST:PORT" (IPv6 in brackets) into VBoxManage's --host and --port. */
export function parseTcpUri(uri: string): { host: string; port: number } {
  const m = /^tcp:(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(uri);
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535)
    throw new TeleportError(400, `not a teleport target URI: ${uri}`, ['expected "tcp:HOST:PORT"']);
  return { host: m[1] ?? m[2], port };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class VirtualBoxDriver implements HypervisorDriver {
  readonly kind = "virtualbox" as const;
  /** No stream reduction (nrdl/SPEC.md 5.7): its migrations keep the plain stream, and none is accepted for it. */
  readonly compression: ReadonlySet<CompressMethod> = new Set();
  private readonly defs: Map<string, VmDefinition>;
  private readonly log: Logger;
  private readonly bin: string;
  private readonly runDir: string;
  private readonly pollMs: number;
  private readonly armTimeoutMs: number;

  constructor(opts: VirtualBoxDriverOptions) {
    this.defs = new Map(opts.inventory.filter((d) => d.hypervisor === "virtualbox").map((d) => [d.name, d]));
    this.log = opts.logger ?? silentLogger;
    this.bin = opts.vboxManage ?? "VBoxManage";
    this.runDir = path.resolve(opts.runDir);
    this.pollMs = opts.pollMs ?? 200;
    this.armTimeoutMs = opts.armTimeoutMs ?? 30_000;
  }

  async available(): Promise<{ ok: boolean; detail: string }> {
    const r = await execa(this.bin, ["--version"], { reject: false });
    if (r.exitCode !== 0)
      return {
        ok: false,
        detail: `${this.bin} not found or not working; install VirtualBox (not available from Debian)`,
      };
    return { ok: true, detail: `VirtualBox ${r.stdout.trim()}` };
  }

  inventory(): VmDefinition[] {
    return [...this.defs.values()];
  }

  async state(vm: string): Promise<VmRunState> {
    return vboxRunState(await this.vmState(vm));
  }

  async start(vm: string): Promise<void> {
    this.definition(vm);
    await this.vbox(["startvm", vm, "--type", "headless"]);
  }

  async stop(vm: string): Promise<void> {
    if ((await this.state(vm)) === "absent") return;
    await this.vbox(["controlvm", vm, "poweroff"]);
  }

  async arm(vm: string, opts: ArmOptions): Promise<ArmedListener> {
    refuseReduction(this.kind, vm, opts);
    const state = await this.vmState(vm);
    if (vboxRunState(state) !== "absent")
      throw new TeleportError(486, `VM ${vm} is ${state} here: cannot arm a teleport target`);
    const port = opts.port ?? (await freePort(opts.address));
    await this.withPasswordFile(opts.secret, (file) =>
      this.vbox([
        "modifyvm",
        vm,
        "--teleporter",
        "on",
        "--teleporterport",
        String(port),
        "--teleporteraddress",
        opts.address,
        "--teleporterpasswordfile",
        file,
      ]),
    );
    try {
      await this.vbox(["startvm", vm, "--type", "headless"]);
      await this.waitFor(vm, (s) => s === "teleportingin", this.armTimeoutMs, "wait for the teleport");
    } catch (err) {
      await this.disarm(vm).catch(() => undefined);
      throw TeleportError.from(err);
    }
    const uri = tcpUri(opts.address, port);
    this.log.info(`armed ${vm}`, { uri });
    return { vm, uri, exports: [] };
  }

  async disarm(vm: string): Promise<void> {
    const state = await this.vmState(vm);
    if (state === "teleportingin") await this.vbox(["controlvm", vm, "poweroff"]);
    else if (vboxRunState(state) !== "absent")
      throw new TeleportError(486, `VM ${vm} is ${state} here, not waiting for a teleport: not disarming it`);
    await this.vbox(["modifyvm", vm, "--teleporter", "off"]);
  }

  async waitResumed(vm: string, timeoutMs: number): Promise<void> {
    const state = await this.waitFor(
      vm,
      (s) => s !== "teleportingin" && s !== "starting" && s !== "restoring",
      timeoutMs,
      "resume",
    );
    if (state !== "running") throw new TeleportError(503, `VM ${vm} did not arrive: it is ${state} here`);
  }

  migrate(vm: string, target: MigrationTarget, opts: MigrationOptions): MigrationHandle {
    let child: execa.ExecaChildProcess | undefined;
    let cancelReason: TeleportError | undefined;
    const cancel = (why: TeleportError) => {
      cancelReason ??= why;
      child?.kill("SIGINT"); // VBoxManage cancels the teleport's progress on SIGINT
    };
    const report = (phase: MigrationPhase, percent: number) =>
      opts.onProgress?.({
        vm,
        phase,
        transferredBytes: -1,
        remainingBytes: -1,
        totalBytes: -1,
        progress: percent / 100,
      });

    const run = async (): Promise<MigrationResult> => {
      this.definition(vm);
      if (opts.pauseBeforeSwitchover)
        throw new TeleportError(501, "VirtualBox teleporting cannot pause before switchover");
      if (opts.bandwidthMbps > 0)
        this.log.warn(`VirtualBox cannot cap teleport bandwidth; ignoring ${opts.bandwidthMbps} Mbit/s for ${vm}`);
      const { host, port } = parseTcpUri(target.uri);
      const state = await this.vmState(vm);
      if (state !== "running") throw new TeleportError(486, `VM ${vm} is ${state}, not running: nothing to teleport`);
      const started = Date.now();
      const timer =
        opts.timeoutS > 0
          ? setTimeout(
              () =>
                cancel(
                  new TeleportError(504, `teleport of ${vm} timed out after ${opts.timeoutS} s and was cancelled`),
                ),
              opts.timeoutS * 1000,
            )
          : undefined;
      try {
        report("setup", 0);
        const r = await this.withPasswordFile(target.secret, async (file) => {
          child = execa(
            this.bin,
            [
              "controlvm",
              vm,
              "teleport",
              "--host",
              host,
              "--port",
              String(port),
              "--passwordfile",
              file,
              "--maxdowntime",
              String(opts.downtimeLimitMs),
            ],
            { reject: false, stdin: "ignore" },
          );
          // "0%...10%...": keep the text, since a chunk may end inside a number
          let progressText = "";
          let last = -1;
          child.stderr?.on("data", (chunk: Buffer) => {
            progressText += chunk.toString("utf8");
            const marks = [...progressText.matchAll(/(\d{1,3})%/g)].map((m) => Number(m[1]));
            const top = marks.length ? Math.max(...marks) : -1;
            if (top > last && top < 100) report("active", (last = top));
          });
          return child;
        });
        if (r.exitCode !== 0) {
          const where =
            (await this.state(vm).catch(() => "unknown")) === "running"
              ? "the VM keeps running on the source"
              : "check the VM on the source";
          if (cancelReason)
            throw new TeleportError(cancelReason.status, cancelReason.reason, [...cancelReason.details, where]);
          throw new TeleportError(503, `teleport of ${vm} to ${target.uri} failed`, [...vboxErrors(r.stderr), where]);
        }
        report("completed", 100);
        return { vm, totalMs: Date.now() - started, downtimeMs: -1, transferredBytes: -1 };
      } finally {
        clearTimeout(timer);
      }
    };

    const done = run();
    const noPause = () =>
      Promise.reject(new TeleportError(501, "VirtualBox teleporting cannot pause before switchover"));
    const readyToSwitch = noPause();
    done.catch(() => undefined);
    readyToSwitch.catch(() => undefined);
    return {
      done,
      readyToSwitch,
      prime: noPause,
      stop: noPause,
      switchover: noPause,
      abort: async () => {
        cancel(new TeleportError(487, `teleport of ${vm} aborted`));
        await done.catch(() => undefined);
      },
    };
  }

  private definition(vm: string): VmDefinition {
    const def = this.defs.get(vm);
    if (!def) throw new TeleportError(404, `VM ${vm} is not defined in this host's inventory`);
    return def;
  }

  private async vmState(vm: string): Promise<string> {
    this.definition(vm);
    const out = await this.vbox(["showvminfo", vm, "--machinereadable"]);
    const m = /^VMState="([^"]*)"/m.exec(out);
    if (!m) throw new TeleportError(502, `VBoxManage showvminfo ${vm} printed no VMState`);
    return m[1];
  }

  private async waitFor(vm: string, ok: (state: string) => boolean, timeoutMs: number, what: string): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const state = await this.vmState(vm);
      if (ok(state)) return state;
      if (Date.now() > deadline)
        throw new TeleportError(504, `VM ${vm} did not ${what} within ${timeoutMs} ms (state ${state})`);
      await sleep(this.pollMs);
    }
  }

  /** Run VBoxManage; stdout on success, a TeleportError with VirtualBox's own error lines otherwise. */
  private async vbox(args: string[]): Promise<string> {
    this.log.debug(`VBoxManage ${args.join(" ")}`);
    const r = await execa(this.bin, args, { reject: false, stdin: "ignore" });
    if (r.exitCode !== 0) {
      if (typeof r.exitCode !== "number")
        throw new TeleportError(503, `cannot run ${this.bin}: not found or not executable`);
      const errors = vboxErrors(r.stderr);
      const notFound = errors.some((l) => /Could not find a registered machine/i.test(l));
      throw new TeleportError(notFound ? 404 : 500, `VBoxManage ${args[0]} ${args[1] ?? ""} failed`.trim(), errors);
    }
    return r.stdout;
  }

  /** Hand the secret to VBoxManage in a private 0600 file that is gone once `use` settles. */
  private async withPasswordFile<T>(secret: string, use: (file: string) => Promise<T>): Promise<T> {
    fs.mkdirSync(this.runDir, { recursive: true });
    const dir = fs.mkdtempSync(path.join(this.runDir, ".vbox-pw-"));
    const file = path.join(dir, "password");
    try {
      fs.writeFileSync(file, secret, { mode: 0o600, flag: "wx" });
      return await use(file);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

/** VirtualBox's "VBoxManage: error: ..." lines, masked (they may echo what they were given). */
function vboxErrors(stderr: string): string[] {
  const lines = stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => /error:|Progress state|CANCELED/i.test(l));
  return (lines.length ? lines : stderr.split("\n").filter(Boolean).slice(-3)).map(maskSecrets);
}
