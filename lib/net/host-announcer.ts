/**
 * Claims a paused VM's MACs for this host's bridge at a group switchover, so frames for the group
 * wait in the destination's taps instead of being lost in the stopped source's (see host-announce.c
 * for why QEMU cannot: a paused QEMU holds its own announce back until the VM runs).
 *
 * One helper process per announcer, started when the first VM is armed to wait (not at the
 * switchover, where its start would cost the pause), answering one line per claim, in order.
 * Built from lib/net/host-announce.c with the host's C compiler into .cache/bin on first use.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import execa from "execa";
import { TeleportError } from "../errors";
import { repoRoot } from "../version";

const SOURCE = path.join(repoRoot(), "lib", "net", "host-announce.c");

/** The helper binary for this source text (its digest in the name: an edited source is rebuilt). */
export async function hostAnnounceBinary(cacheDir = path.join(repoRoot(), ".cache", "bin")): Promise<string> {
  const text = fs.readFileSync(SOURCE);
  const digest = crypto.createHash("sha256").update(text).digest("hex").slice(0, 12);
  const binary = path.join(cacheDir, `host-announce-${digest}`);
  if (fs.existsSync(binary)) return binary;
  fs.mkdirSync(cacheDir, { recursive: true });
  const partial = `${binary}.${process.pid}.tmp`;
  const cc = process.env.CC ?? "cc";
  const r = await execa(cc, ["-O2", "-Wall", "-o", partial, SOURCE], { reject: false });
  if (r.exitCode !== 0)
    throw new TeleportError(
      500,
      `cannot build the host announcer with ${cc} (apt-get install gcc libc6-dev): ${r.stderr || `exit ${r.exitCode}`}`,
    );
  fs.renameSync(partial, binary); // atomic: a concurrent builder finds a whole file or none
  return binary;
}

interface Pending {
  resolve(): void;
  reject(err: TeleportError): void;
}

export class HostAnnouncer {
  private readonly pending: Pending[] = [];
  private failure?: TeleportError;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    const lines = readline.createInterface({ input: child.stdout });
    lines.on("line", (line) => this.answer(line));
    child.on("exit", (code, signal) => this.fail(`the host announcer exited (${signal ?? code})`));
    child.on("error", (err) => this.fail(`the host announcer failed: ${err.message}`));
    child.stdin.on("error", () => undefined); // its exit says it
  }

  /**
   * Build if needed, start the helper and wait until its sockets are open. `prefix` runs it in
   * another network namespace (`ip netns exec NS`): the bridge's, when this process is not in it.
   */
  static async start(prefix: readonly string[] = []): Promise<HostAnnouncer> {
    const command = [...prefix, await hostAnnounceBinary()];
    const child = spawn(command[0], command.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
    const announcer = new HostAnnouncer(child);
    await new Promise<void>((resolve, reject) => announcer.pending.push({ resolve, reject }));
    // it dies with its stdin when this process dies; it must not keep this one alive
    child.unref();
    for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as unknown as { unref?(): void }).unref?.();
    return announcer;
  }

  /** Point the tap's bridge at `mac` and tell the network beyond it; resolves once both are done. */
  claim(tap: string, mac: string): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.child.stdin.write(`${tap} ${mac}\n`);
    });
  }

  close(): void {
    this.child.stdin.end();
  }

  private answer(line: string): void {
    const next = this.pending.shift();
    if (!next) return;
    if (line === "ready" || line.startsWith("ok ")) return next.resolve();
    const reason = line.replace(/^(err|fatal) /, "");
    next.reject(new TeleportError(500, `could not announce from this host's bridge: ${reason}`));
  }

  private fail(reason: string): void {
    this.failure ??= new TeleportError(500, reason);
    for (const p of this.pending.splice(0)) p.reject(this.failure);
  }
}
