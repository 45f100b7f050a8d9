/** The test guest's memory writer (st.dirty=), as a host's serial console log shows it. */
import fs from "node:fs";
import path from "node:path";

function passLines(runDir: string, vm: string): RegExpMatchArray[] {
  const file = path.join(runDir, `${vm}.serial.log`);
  const log = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
  return [...log.matchAll(/rate \d+ passes (\d+) maxgap_ms \d+ lastgap_ms (\d+)/g)];
}

/**
 * Its pass counter, in the order `runDir`'s QEMU printed it (a QEMU appends to its host's file, so a
 * VM that left and came back shows both stays). The counter lives in guest memory: a migration that
 * loses memory shows as a jump or a restart.
 */
export function writerPasses(runDir: string, vm: string): number[] {
  return passLines(runDir, vm).map((m) => Number(m[1]));
}

/**
 * Its pace: how long each pass took from the end of the one before, in guest ms, in the same order
 * as writerPasses. A pass rewrites the rate's MiB and then sleeps out the rest of its second, so a
 * writer that keeps up shows about 1000; more means the guest ran too slowly to write that rate.
 */
export function writerGaps(runDir: string, vm: string): number[] {
  return passLines(runDir, vm).map((m) => Number(m[2]));
}

/**
 * How often the guest's kernel killed a process for want of memory, from the same log. The writer's
 * dd is the usual victim in a small guest: its loop then goes on at its pace but writes nothing.
 */
export function guestOomKills(runDir: string, vm: string): number {
  const file = path.join(runDir, `${vm}.serial.log`);
  const log = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
  return [...log.matchAll(/Out of memory: Killed process/g)].length;
}
