/**
 * What every fault case ends with: the invariant, checked and printed. Where each VM has a live
 * QEMU (exactly one host, or none when the only copy was the one killed), what is left over in
 * the run directories (a QEMU, QMP socket or migration key file of a VM that does not run
 * there), what the destination's journal still holds, and what the operator was told.
 */
import fs from "node:fs";
import path from "node:path";
import { Writable } from "node:stream";
import winston from "winston";
import { readJournal } from "../../agents/destination/journal";
import { livePid, terminateRunDirs } from "../../lib/hypervisor/pidfile";
import type { Logger } from "../../lib/log/logger";

export type HostName = "dc1" | "dc2";
export interface HostDirs {
  runDir: string;
  stateDir: string;
}

export function pidIn(runDir: string, vm: string): number | undefined {
  return livePid(path.join(runDir, `${vm}.pid`));
}

export function killQemu(runDir: string, vm: string): void {
  const pid = pidIn(runDir, vm);
  if (pid === undefined) throw new Error(`no QEMU for ${vm} in ${runDir}`);
  process.kill(pid, "SIGKILL");
}

export async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
  everyMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The destination's journal of armed dialogs (Call-IDs); empty when the file is absent. */
export function journalOf(stateDir: string): string[] {
  return readJournal(stateDir).map((e) => e.callId);
}

/** Files of a VM that does not run in `runDir` (pid, QMP/monitor sockets), and any migration key left. */
export function leftovers(runDir: string): string[] {
  if (!fs.existsSync(runDir)) return [];
  return fs.readdirSync(runDir).filter((f) => {
    if (/\.psk-(in|out)$/.test(f)) return true;
    const m = /^(.+)\.(pid|qmp|mon)$/.exec(f);
    return m !== null && pidIn(runDir, m[1]) === undefined;
  });
}

export interface Invariant {
  /** VM -> hosts where it has a live QEMU. */
  where: Record<string, HostName[]>;
  /** "dc2/router1.psk-in" and the like: must be empty. */
  leftovers: string[];
  /** Call-IDs still in the destination's journal: must be empty once the dialog ended. */
  journal: string[];
}

/** One fault matrix per test file: every case adds a line, the file prints the table at the end. */
export class FaultMatrix {
  private readonly lines: string[] = [];

  /** Check the invariant on both hosts, print it with what the operator was told, and return it. */
  check(name: string, hosts: Record<HostName, HostDirs>, vms: string[], told: string): Invariant {
    const inv: Invariant = {
      where: Object.fromEntries(
        vms.map((vm) => [vm, (["dc1", "dc2"] as const).filter((h) => pidIn(hosts[h].runDir, vm) !== undefined)]),
      ),
      leftovers: (["dc1", "dc2"] as const).flatMap((h) => leftovers(hosts[h].runDir).map((f) => `${h}/${f}`)),
      journal: journalOf(hosts.dc2.stateDir),
    };
    const placed = Object.entries(inv.where)
      .map(([vm, h]) => `${vm}@${h.length ? h.join("+") : "nowhere"}`)
      .join(" ");
    const left =
      inv.leftovers.length || inv.journal.length
        ? `LEFT: ${[...inv.leftovers, ...inv.journal.map((c) => `journal ${c}`)].join(", ")}`
        : "nothing left";
    const line = `${name.padEnd(62)} | ${placed} | ${left} | ${told.replace(/\s+/g, " ").slice(0, 240)}`;
    this.lines.push(line);
    console.log(`fault case: ${line}`);
    return inv;
  }

  print(): void {
    console.log(`fault matrix (case | placement | leftovers | what the operator was told):\n${this.lines.join("\n")}`);
  }
}

/** A logger that keeps the lines (JSON) of an in-process agent, to show and check what it said. */
export function capturingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString().trim());
      done();
    },
  });
  return {
    logger: winston.createLogger({
      level: "info",
      format: winston.format.json(),
      transports: [new winston.transports.Stream({ stream })],
    }),
    lines,
  };
}

/** dc1's and dc2's run and state folders under one test's base folder. */
export const dirsOf = (base: string): Record<HostName, HostDirs> => ({
  dc1: { runDir: path.join(base, "dc1"), stateDir: path.join(base, "dc1-state") },
  dc2: { runDir: path.join(base, "dc2"), stateDir: path.join(base, "dc2-state") },
});

/** A host config (or inventory) written as JSON; returns its path. */
export function writeConfig(file: string, cfg: Record<string, unknown>): string {
  fs.writeFileSync(file, JSON.stringify(cfg, null, 2));
  return file;
}

/** Every QEMU whose pidfile is in these run folders, stopped. */
export async function killPids(...runDirs: string[]): Promise<void> {
  await terminateRunDirs(runDirs);
}
