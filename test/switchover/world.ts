/**
 * A two-VM group (router1, a router, and video, a server) moved with strategy switchover and group
 * commit (nrdl/SPEC.md 5.6) between two agents that run as their own processes, so that a test
 * can kill either with -9 at a crash point (lib/plan/crash-point.ts), or hold it there while it
 * kills a QEMU, and start it again. What every case ends with is checked the same way: each VM
 * runs on exactly one host, the whole group on the same one, none is paused anywhere, nothing is
 * left armed or journaled.
 */
import fs from "node:fs";
import path from "node:path";
import { readJournal } from "../../agents/destination/journal";
import { GroupJournal } from "../../agents/source/group-journal";
import type { VmDefinition, VmRunState } from "../../lib/hypervisor/driver";
import type { CrashPoint } from "../../lib/plan/crash-point";
import { ensureBuilt, runCli, type CliProcess } from "../e2e/cli-process";
import { bootOnSource, configFile, guestDefs, startPair, type Pair } from "../harness";
import { pidIn, until } from "../security/fault-report";

export const GROUP = ["router1", "video"];

export async function groupDefs(): Promise<VmDefinition[]> {
  ensureBuilt();
  return guestDefs([
    ["router1", "router"],
    ["video", "server"],
  ]);
}

export interface World {
  pair: Pair;
  procs: CliProcess[];
  holdDir: string;
  dest?: CliProcess;
}

/** dc2 gives up on a silent source after 3 s: a killed source agent's group is decided quickly. */
export async function groupWorld(defs: VmDefinition[]): Promise<World> {
  const pair = await startPair(defs, { destination: false, dc2: { timers: { idleTimeoutS: 3 } } });
  const holdDir = path.join(pair.base, "holds");
  fs.mkdirSync(holdDir);
  await bootOnSource(pair);
  return { pair, procs: [], holdDir };
}

/** One world per test, closed after each: `const newWorld = worldPerTest()` at the top of a test file. */
export function worldPerTest(): () => Promise<World> {
  let defs: VmDefinition[] = [];
  let w: World | undefined;
  beforeAll(async () => {
    defs = await groupDefs();
  });
  afterEach(async () => {
    await closeWorld(w);
    w = undefined;
  });
  return async () => (w = await groupWorld(defs));
}

export async function closeWorld(w: World | undefined): Promise<void> {
  if (!w) return;
  for (const f of fs.existsSync(w.holdDir) ? fs.readdirSync(w.holdDir) : []) fs.rmSync(path.join(w.holdDir, f));
  for (const p of w.procs) p.child.kill("SIGKILL");
  await Promise.all(w.procs.map((p) => p.exited));
  await w.pair.close();
}

type Points = { crashAt?: CrashPoint; holdAt?: CrashPoint };

function pointEnv(w: World, p: Points): Record<string, string> {
  return {
    SIP_TELEPORT_CRASH_AT: p.crashAt ?? "",
    SIP_TELEPORT_HOLD_AT: p.holdAt ?? "",
    SIP_TELEPORT_HOLD_DIR: w.holdDir,
  };
}

/** `sip-teleport listen` for dc2 (again, after a kill: it finishes from its journals first). */
export async function listen(w: World, points: Points = {}): Promise<CliProcess> {
  const proc = runCli(["listen", "-c", configFile(w.pair, "dc2")], { env: pointEnv(w, points) });
  w.procs.push(proc);
  w.dest = proc;
  await proc.waitFor(/listening as/);
  return proc;
}

/**
 * `sip-teleport migrate` of the group from dc1, strategy switchover (group commit is the default);
 * `extra`: more options (e.g. --dedup on).
 */
export function migrate(w: World, points: Points = {}, extra: string[] = []): CliProcess {
  const args = ["migrate", "-c", configFile(w.pair, "dc1"), "--to", w.pair.dc2.uri, "--strategy", "switchover"];
  const proc = runCli([...args, "--timeout-s", "30", "--json", ...extra, ...GROUP], { env: pointEnv(w, points) });
  w.procs.push(proc);
  return proc;
}

/** Resolves when a process reached `point` and waits there. */
export async function reached(w: World, point: CrashPoint, timeoutMs = 60_000): Promise<void> {
  await until(`a process held at ${point}`, () => fs.existsSync(holdFile(w, point)), timeoutMs, 10);
}

export function release(w: World, point: CrashPoint): void {
  fs.rmSync(holdFile(w, point), { force: true });
}

const holdFile = (w: World, point: CrashPoint) => path.join(w.holdDir, point.replace(":", "-"));

export async function kill9(p: CliProcess): Promise<void> {
  p.child.kill("SIGKILL");
  await p.exited;
}

export function killQemuOf(w: World, host: "dc1" | "dc2", vm: string): void {
  const pid = pidIn(w.pair[host].runDir, vm);
  if (pid === undefined) throw new Error(`no QEMU for ${vm} on ${host}`);
  process.kill(pid, "SIGKILL");
}

export async function stateOf(w: World, host: "dc1" | "dc2", vm: string): Promise<VmRunState> {
  const driver = w.pair[host].host.find(vm)?.driver;
  return driver ? driver.state(vm).catch(() => "absent" as const) : "absent";
}

/** Each VM's state on both hosts, e.g. { router1: "dc2:running dc1:absent" }. */
export async function states(w: World, vms = GROUP): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const vm of vms) out[vm] = `dc1:${await stateOf(w, "dc1", vm)} dc2:${await stateOf(w, "dc2", vm)}`;
  return out;
}

/** Wait until `vms` run on `host` only (each with no copy, paused or not, on the other). */
export async function settledOn(w: World, host: "dc1" | "dc2", vms = GROUP, timeoutMs = 60_000): Promise<void> {
  const other = host === "dc1" ? "dc2" : "dc1";
  const want = host === "dc1" ? "dc1:running dc2:absent" : "dc1:absent dc2:running";
  let last: Record<string, string> = {};
  try {
    await until(
      `${vms.join(", ")} running on ${host} only`,
      async () => {
        last = await states(w, vms);
        return vms.every((vm) => last[vm] === want && pidIn(w.pair[other].runDir, vm) === undefined);
      },
      timeoutMs,
      100,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; last seen ${JSON.stringify(last)}`);
  }
}

/** Nothing left behind: no armed dialog at dc2, no stopped group journaled at dc1. */
export function nothingPending(w: World): { armed: string[]; stoppedGroups: string[] } {
  return {
    armed: readJournal(w.pair.dc2.cfg.stateDir).map((e) => e.callId),
    stoppedGroups: new GroupJournal(w.pair.dc1.cfg.stateDir).all().map((g) => g.migrationId),
  };
}

/** The destination's decisions, as written in its journal. */
export function decisionsOf(w: World): Array<{ outcome: string; reason?: string }> {
  const file = path.join(w.pair.dc2.cfg.stateDir, "decisions.jsonl");
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { outcome: string; reason?: string });
}
