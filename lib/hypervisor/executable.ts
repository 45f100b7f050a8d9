/**
 * A hypervisor's "is it installed" probe (`qemu-system-x86_64 --version`) costs a process start,
 * 40-60 ms, and the destination asks it for every VM of every offer. The binary does not change
 * between INVITEs, so its answer is kept for as long as the file it ran is the same file.
 */
import fs from "node:fs";
import path from "node:path";

export interface ProbeResult {
  ok: boolean;
  detail: string;
}

/**
 * What `command` runs now (as PATH finds it, or the path itself), as path, inode, size and
 * times: a few stat calls. Undefined when there is no such executable file.
 */
export function executableIdentity(command: string, searchPath = process.env.PATH ?? ""): string | undefined {
  const candidates = command.includes("/")
    ? [path.resolve(command)]
    : searchPath
        .split(path.delimiter)
        .filter(Boolean)
        .map((dir) => path.join(dir, command));
  for (const file of candidates) {
    try {
      const st = fs.statSync(file);
      if (!st.isFile()) continue;
      fs.accessSync(file, fs.constants.X_OK);
      return `${file}:${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    } catch {
      continue;
    }
  }
  return undefined;
}

/**
 * `probe` run once per executable file: again when the file is replaced, changed (an upgrade),
 * removed or another one comes first on PATH. A failed probe is not kept, so the next call tries
 * again (an install is noticed); calls while a probe runs share it.
 */
export class ExecutableProbe {
  private last?: { identity: string; result: Promise<ProbeResult> };

  constructor(
    private readonly command: string,
    private readonly probe: () => Promise<ProbeResult>,
  ) {}

  async check(): Promise<ProbeResult> {
    const identity = executableIdentity(this.command);
    if (identity === undefined) return this.probe(); // nothing to keep: the probe says why it fails
    if (this.last?.identity !== identity) this.last = { identity, result: this.probe() };
    const mine = this.last;
    const forget = () => {
      if (this.last === mine) this.last = undefined;
    };
    const r = await mine.result.catch((err: unknown) => {
      forget();
      throw err;
    });
    if (!r.ok) forget();
    return r;
  }
}
