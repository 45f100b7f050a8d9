/**
 * The crash points of group commit (nrdl/SPEC.md 5.6), named as the table's columns, so that a
 * test can kill an agent exactly there (kill -9 of its own process) or hold it there while it
 * kills a QEMU or cuts the link. Inert unless the environment asks:
 *
 *   SIP_TELEPORT_CRASH_AT=source:stopped          SIGKILL this process on reaching the point
 *   SIP_TELEPORT_HOLD_AT=destination:arrived      wait there while SIP_TELEPORT_HOLD_DIR/<point> exists
 *
 * A held process writes the file itself when it arrives and goes on when the test removes it.
 */
import fs from "node:fs";
import { join } from "node:path";

export const CRASH_POINTS = [
  /** the group's MACs claimed (<switchover> answered, its 50 ms up, or a VM stopped itself); none stopped by us */
  "source:claimed",
  /** every VM of the group stopped at the source; no rest sent yet */
  "source:stopped",
  /** every VM's rest sent (migrate-continue); no decision known */
  "source:sent",
  /** the destination's decision known; not applied to the source's copies yet */
  "source:decided",
  /** every VM arrived at the destination; commit not written */
  "destination:arrived",
  /** commit written; no VM resumed yet */
  "destination:committed",
  /** the network functions resumed; the rest not yet */
  "destination:resuming",
] as const;
export type CrashPoint = (typeof CRASH_POINTS)[number];

const listed = (name: string, point: string): boolean => (process.env[name] ?? "").split(",").includes(point);

export async function crashPoint(point: CrashPoint): Promise<void> {
  if (listed("SIP_TELEPORT_CRASH_AT", point)) process.kill(process.pid, "SIGKILL");
  if (!listed("SIP_TELEPORT_HOLD_AT", point)) return;
  const file = join(process.env.SIP_TELEPORT_HOLD_DIR ?? ".", point.replace(":", "-"));
  fs.writeFileSync(file, `${process.pid}\n`);
  while (fs.existsSync(file)) await new Promise((r) => setTimeout(r, 20));
}
