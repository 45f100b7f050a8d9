/**
 * The product under test: a destination agent (`sip-teleport listen`) running inside each data
 * center's namespace, and for every move a one-shot source agent (`sip-teleport migrate --json`)
 * in the source's namespace. They talk SIP across the WAN bridge; the VMs, run dirs and QMP event
 * sockets are the lab's. Runs the built CLI (dist/), like an operator would.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import execa from "execa";
import { repoRoot } from "../../lib/version";
import type { Lab } from "./lab";
import { HOSTS, type HostName, SEGMENT } from "./network";
import type { MigrationReport, Migrator, MoveRequest, VmReport } from "./run";

/** The line `migrate --json` ends with (agents/source/progress-display.ts). */
interface SummaryLine {
  event: "summary";
  outcome: string;
  vms: Array<{
    vm: string;
    state: string;
    totalMs?: number;
    downtimeMs?: number;
    transferredBytes?: number;
    diskTransferredBytes?: number;
    reason?: string;
  }>;
  phases: NonNullable<MigrationReport["phases"]>;
  dedup?: MigrationReport["dedup"];
}

function cliPath(): string {
  return path.join(repoRoot(), "dist", "agents", "cli.js");
}

/** Build dist/ when sources changed (the same step `npm test` runs first). */
export async function ensureBuilt(): Promise<void> {
  await execa("bash", [path.join(repoRoot(), "scripts", "bootstrap.sh")], { stdio: ["ignore", "ignore", "inherit"] });
}

export interface AgentPairOptions {
  /** migration.announceAtSwitchover of both agents (default true); false names the pair "sip-noannounce". */
  announce?: boolean;
}

export class AgentPair implements Migrator {
  readonly name: string;
  private readonly listeners = new Map<HostName, ChildProcess>();
  private readonly sipPort = 20000 + Math.floor(Math.random() * 20000);

  private constructor(
    private readonly lab: Lab,
    private readonly opts: AgentPairOptions,
  ) {
    this.name = opts.announce === false ? "sip-noannounce" : "sip";
  }

  /** Start a destination agent on both hosts (moves go both ways) and wait until each listens. */
  static async start(lab: Lab, opts: AgentPairOptions = {}): Promise<AgentPair> {
    const pair = new AgentPair(lab, opts);
    try {
      for (const host of HOSTS) await pair.listen(host);
      return pair;
    } catch (err) {
      await pair.stop();
      throw err;
    }
  }

  private configFile(host: HostName): string {
    return path.join(this.lab.dir, `${host}-${this.name}.json`);
  }

  private uri(host: HostName): string {
    return `sip:${host}@${SEGMENT[host]}:${this.sipPort};transport=udp`;
  }

  private writeConfig(host: HostName): void {
    const cfg = {
      host,
      sip: {
        aor: `sip:${host}@${SEGMENT[host]}`,
        listen: [{ transport: "udp", address: SEGMENT[host], port: this.sipPort }],
      },
      // each data center may call the other (security.destinations: loopback only when empty)
      security: { allow: [SEGMENT.dc1, SEGMENT.dc2], destinations: [`sip:*@${SEGMENT.dc1}`, `sip:*@${SEGMENT.dc2}`] },
      inventory: this.lab.inventory(host),
      runDir: this.lab.runDir(host),
      stateDir: path.join(this.lab.dir, `${host}-${this.name}-state`),
      migration: { address: SEGMENT[host], ports: "49152-49407", announceAtSwitchover: this.opts.announce !== false },
      log: { level: "warn" },
    };
    fs.writeFileSync(this.configFile(host), JSON.stringify(cfg, null, 2));
  }

  private async listen(host: HostName): Promise<void> {
    this.writeConfig(host);
    const ns = this.lab.net.exec(host);
    const child = spawn(
      ns[0],
      [...ns.slice(1), process.execPath, cliPath(), "listen", "--config", this.configFile(host)],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    this.listeners.set(host, child);
    let output = "";
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`agent on ${host} did not listen within 20 s: ${output}`)),
        20_000,
      );
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes("listening as")) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", onData);
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`agent on ${host} exited with ${code}: ${output}`));
      });
    });
  }

  async migrate(_lab: Lab, req: MoveRequest): Promise<MigrationReport> {
    const p = req.policy;
    const ns = this.lab.net.exec(req.from);
    const args = [
      ...ns.slice(1),
      process.execPath,
      cliPath(),
      "migrate",
      "--config",
      this.configFile(req.from),
      "--to",
      this.uri(req.to),
      "--json",
      "--strategy",
      p.strategy,
      "--max-parallel",
      String(p.maxParallel),
      "--bandwidth-mbps",
      String(p.bandwidthMbps),
      "--downtime-limit-ms",
      String(p.downtimeLimitMs),
      "--timeout-s",
      String(p.timeoutS),
      "--on-error",
      p.onError,
      ...(req.reductions ? ["--compress", req.reductions.compress, "--dedup", req.reductions.dedup] : []),
      ...this.lab.exp.guests.map((g) => g.name),
    ];
    const r = await execa(ns[0], args, { reject: false, timeout: (p.timeoutS + 30) * 1000 });
    const line = r.stdout.split("\n").find((l) => l.startsWith('{"event":"summary"'));
    if (!line)
      throw new Error(`source agent gave no summary (exit ${r.exitCode}): ${r.stderr || r.stdout}`.slice(0, 2000));
    const s = JSON.parse(line) as SummaryLine;
    const vms = s.vms.map((v): VmReport =>
      v.state === "completed"
        ? {
            vm: v.vm,
            outcome: "completed",
            totalMs: v.totalMs ?? -1,
            downtimeMs: v.downtimeMs ?? -1,
            bytes: v.transferredBytes ?? -1,
            diskBytes: v.diskTransferredBytes,
          }
        : { vm: v.vm, outcome: v.state === "aborted" ? "aborted" : "failed", reason: v.reason ?? v.state },
    );
    return { vms, phases: s.phases, ...(s.dedup ? { dedup: s.dedup } : {}) };
  }

  /** Stop both destination agents (SIGTERM: they disarm what they armed and exit). */
  async stop(): Promise<void> {
    await Promise.all(
      [...this.listeners.values()].map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            const kill = setTimeout(() => child.kill("SIGKILL"), 5000);
            child.once("exit", () => {
              clearTimeout(kill);
              resolve();
            });
            child.kill("SIGTERM");
          }),
      ),
    );
    this.listeners.clear();
  }
}
