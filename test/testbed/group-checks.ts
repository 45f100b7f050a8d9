/** What a whole-group switchover must look like in a testbed run's QMP events. */
import { planWaves } from "../../lib/plan/waves";
import type { Lab } from "./lab";
import type { RunResult } from "./run";

/** Every VM's STOP (source) and RESUME (destination), and the plan's waves in resume order. */
export function expectOneGroupInterruption(r: RunResult, lab: Lab): void {
  const stops = r.vms.map((v) => v.marks.switchover as number);
  const resumes = new Map(r.vms.map((v) => [v.vm, v.marks.end as number]));
  for (const v of r.vms) expect(v.marks).toMatchObject({ switchover: expect.any(Number), end: expect.any(Number) });
  // one interruption: the whole group is stopped before any VM resumes on the destination
  expect(Math.max(...stops)).toBeLessThan(Math.min(...resumes.values()));
  const waves = planWaves(
    lab.exp.guests.map((g) => ({
      ...g,
      hypervisor: "qemu" as const,
      memoryMib: 96,
      cpus: 1,
      dependsOn: [],
      disks: [],
    })),
  ).waves;
  for (let i = 1; i < waves.length; i++) {
    const before = Math.max(...waves[i - 1].vms.map((vm) => resumes.get(vm) as number));
    const after = Math.min(...waves[i].vms.map((vm) => resumes.get(vm) as number));
    expect(before).toBeLessThan(after);
  }
}
