/**
 * The same plan and the same QEMU migrations the agents run, issued directly with no SIP:
 * arm every VM on the destination first (as the destination agent does before its 200 OK),
 * then run the plan's waves with the executor. Copied disks are created and exported by the
 * arming and mirrored by the migration, as in the agents' dialog. The baseline the SIP figures are
 * compared to, and what the testbed used before the agents could run.
 */
import { randomBytes } from "node:crypto";
import type { MigrationTarget } from "../../lib/hypervisor/driver";
import { diskSpecOf } from "../../lib/hypervisor/qemu-disks";
import { executePlan } from "../../lib/plan/execute";
import { planWaves } from "../../lib/plan/waves";
import type { Policy } from "../../nrdl/types";
import type { Lab } from "./lab";
import { SEGMENT } from "./network";
import type { MigrationReport, Migrator, MoveRequest } from "./run";

/** A port in the dynamic range, random so that parallel runs rarely collide. */
function randomPort(): number {
  return 40000 + Math.floor(Math.random() * 20000);
}

export const directMigrator: Migrator = {
  name: "direct",
  async migrate(lab: Lab, req: MoveRequest): Promise<MigrationReport> {
    // reductions are negotiated over SIP: this baseline moves the plain stream only
    if (req.reductions && (req.reductions.compress !== "none" || req.reductions.dedup !== "off"))
      throw new Error("the direct migrator moves the plain stream only (no --compress, no --dedup)");
    const src = lab.driver(req.from);
    const dst = lab.driver(req.to);
    const targets = new Map<string, MigrationTarget>();
    for (const g of lab.exp.guests) {
      const secret = randomBytes(16).toString("hex");
      const def = lab.inventory(req.from).find((d) => d.name === g.name);
      const disks = await Promise.all((def?.disks ?? []).map(diskSpecOf));
      const armed = await dst.arm(g.name, {
        address: SEGMENT[req.to],
        port: randomPort(),
        secret,
        ...(disks.length ? { disks, nbdSecret: randomBytes(16).toString("hex") } : {}),
      });
      targets.set(g.name, { uri: armed.uri, secret, exports: armed.exports });
    }
    const policy: Policy = { ...req.policy };
    const plan = planWaves(
      lab.exp.guests.map((g) => ({
        name: g.name,
        hypervisor: "qemu",
        role: g.role,
        memoryMib: 96,
        cpus: 1,
        dependsOn: [],
        disks: [],
      })),
    );
    const outcomes = await executePlan({
      plan,
      policy,
      start: (vm, pause) => {
        const target = targets.get(vm);
        if (!target) throw new Error(`no listener armed for ${vm}`);
        return src.migrate(vm, target, {
          bandwidthMbps: policy.bandwidthMbps,
          downtimeLimitMs: policy.downtimeLimitMs,
          timeoutS: policy.timeoutS,
          pauseBeforeSwitchover: pause,
        });
      },
    });
    // A VM that did not move must not leave a listener behind on the destination.
    for (const o of outcomes) if (o.state !== "completed") await dst.disarm(o.vm).catch(() => undefined);
    return {
      vms: outcomes.map((o) =>
        o.state === "completed"
          ? {
              vm: o.vm,
              outcome: "completed",
              totalMs: o.result.totalMs,
              downtimeMs: o.result.downtimeMs,
              bytes: o.result.transferredBytes,
              diskBytes: o.result.diskTransferredBytes,
            }
          : { vm: o.vm, outcome: o.state, reason: o.reason },
      ),
    };
  },
};
