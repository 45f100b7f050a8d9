/**
 * `sip-teleport` as its own process (built dist/), so a test can kill -9 it like a crash.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const ROOT = path.join(__dirname, "..", "..");
const CLI = path.join(ROOT, "dist", "agents", "cli.js");

/** Build dist/ when a test runs without `npm test`'s pre-build. */
export function ensureBuilt(): void {
  if (fs.existsSync(CLI)) return;
  const r = spawnSync("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: ROOT, stdio: "inherit" });
  if (r.status !== 0) throw new Error("build failed");
}

export interface CliProcess {
  child: ChildProcess;
  output(): string;
  /** Resolves when stdout+stderr match, rejects on exit or timeout. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
  exited: Promise<number | null>;
}

/**
 * `netns`: run inside that network namespace (`ip netns exec`), for tests that shape the link;
 * `env`: added to this process's environment (e.g. lib/plan/crash-point.ts's).
 */
export function runCli(args: string[], opts: { netns?: string; env?: Record<string, string> } = {}): CliProcess {
  let out = "";
  const [cmd, argv] = opts.netns
    ? ["ip", ["netns", "exec", opts.netns, process.execPath, CLI, ...args]]
    : [process.execPath, [CLI, ...args]];
  const env = opts.env ? { ...process.env, ...opts.env } : process.env;
  const child = spawn(cmd, argv, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env });
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString();
    for (const w of waiters) w();
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return {
    child,
    output: () => out,
    exited,
    waitFor: (pattern, timeoutMs = 30000) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!pattern.test(out)) return;
          cleanup();
          resolve();
        };
        const timer = setTimeout(
          () => (cleanup(), reject(new Error(`timeout waiting for ${pattern}; output:\n${out}`))),
          timeoutMs,
        );
        const cleanup = () => (clearTimeout(timer), waiters.delete(check));
        void exited.then((code) => {
          if (!waiters.has(check)) return;
          cleanup();
          reject(new Error(`process exited (${code}) before ${pattern}; output:\n${out}`));
        });
        waiters.add(check);
        check();
      }),
  };
}
