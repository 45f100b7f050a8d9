/** What a whole-group switchover must look like in a testbed run's QMP events. */
import type { Lab } from "./lab";
import type { RunResult } from "./run";

/**
 * QMP stop of the whole group at once, not VM by VM: the STOPs lie within this of each other. The
 * figure itself is bench:thesis' (1-40 ms quiet); in a full `npm test` on two loaded cores it
 * reached 71 ms once. Stopping wave by wave puts a VM's whole final pass (400 ms and more) between two STOPs.
 */
const STOP_SPREAD_MS = 200;

/**
 * Every VM's STOP (source) and RESUME (destination): one interruption, the group stopped together.
 * The group is sent in parallel (not wave by wave), so the resume order within it is not asserted.
 */
export function expectOneGroupInterruption(r: RunResult, lab: Lab): void {
  const stops = r.vms.map((v) => v.marks.switchover as number);
  const resumes = r.vms.map((v) => v.marks.end as number);
  for (const v of r.vms) expect(v.marks).toMatchObject({ switchover: expect.any(Number), end: expect.any(Number) });
  expect(r.vms.map((v) => v.vm).sort()).toEqual(lab.exp.guests.map((g) => g.name).sort());
  // one interruption: the whole group is stopped before any VM resumes on the destination
  expect(Math.max(...stops)).toBeLessThan(Math.min(...resumes));
  const spread = Math.max(...stops) - Math.min(...stops);
  console.log(
    `group switchover: STOP spread ${spread.toFixed(1)} ms, first STOP to last RESUME ` +
      `${(Math.max(...resumes) - Math.min(...stops)).toFixed(1)} ms`,
  );
  expect(spread).toBeLessThan(STOP_SPREAD_MS);
}
