/**
 * Processes that outlive us are found again through their pidfiles. A pid alone can be reused
 * by an unrelated process after a crash, so a pidfile only counts when that process's command
 * line still names the pidfile itself.
 */
import fs from "node:fs";
import path from "node:path";

function readCmdline(pid: number): string[] | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return undefined;
  }
}

/** Alive and not a zombie (a daemon's parent may be an init that does not reap). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** The pid a pidfile names, when that process is alive and was started with this pidfile. */
export function livePid(pidfile: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(pidfile, "utf8").trim();
  } catch {
    return undefined;
  }
  const pid = Number(text);
  if (!Number.isInteger(pid) || pid <= 1 || !isAlive(pid)) return undefined;
  const argv = readCmdline(pid);
  return argv && argv.includes(pidfile) ? pid : undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Wait until the process is gone; false on timeout. */
export async function waitExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
  return true;
}

/** SIGTERM, then SIGKILL after graceMs; resolves when the process is gone. */
export async function terminate(pid: number, graceMs = 2000): Promise<void> {
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  if (await waitExit(pid, graceMs)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  await waitExit(pid, 5000);
}

/** Stop every process that has a live pidfile in these run dirs (missing dirs are skipped). */
export async function terminateRunDirs(dirs: readonly string[], graceMs = 500): Promise<void> {
  for (const dir of dirs) {
    if (!fs.existsSync(dir)) continue;
    for (const f of fs.readdirSync(dir).filter((n) => n.endsWith(".pid"))) {
      const pid = livePid(path.join(dir, f));
      if (pid !== undefined) await terminate(pid, graceMs);
    }
  }
}
