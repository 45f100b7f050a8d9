/** What a test compares before and after an action that must change nothing: processes and files. */
import fs from "node:fs";
import path from "node:path";

/** Every process whose command line mentions `marker` (a test's temp dir): "pid args". */
export function processesMentioning(marker: string): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let cmd: string;
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim();
    } catch {
      continue; // ended meanwhile
    }
    if (cmd.includes(marker)) out.push(`${pid} ${cmd}`);
  }
  return out.sort();
}

/**
 * Every file and directory under `dir` with its size; serial logs (*.log) by name only, as a
 * running guest keeps writing its console there.
 */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        out.push(`${p}/`);
        walk(p);
      } else out.push(e.name.endsWith(".log") ? p : `${p} ${fs.statSync(p).size}`);
    }
  };
  walk(dir);
  return out.sort();
}
