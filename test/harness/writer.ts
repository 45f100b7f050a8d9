/** The test guest's memory writer (st.dirty=), as a host's serial console log shows it. */
import fs from "node:fs";
import path from "node:path";

/**
 * Its pass counter, in the order `runDir`'s QEMU printed it (a QEMU appends to its host's file, so a
 * VM that left and came back shows both stays). The counter lives in guest memory: a migration that
 * loses memory shows as a jump or a restart.
 */
export function writerPasses(runDir: string, vm: string): number[] {
  const file = path.join(runDir, `${vm}.serial.log`);
  const log = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
  return [...log.matchAll(/rate \d+ passes (\d+) maxgap_ms/g)].map((m) => Number(m[1]));
}
