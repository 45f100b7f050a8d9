/**
 * Named plans for the console and the MESSAGE trigger: the config's `console.plans`, then the
 * NRDL examples (exp1..exp3). An example keeps its order (depends-on) and policy, but takes each
 * VM's hypervisor, role, memory and CPUs from this host's inventory, which is what will move.
 */
import type { HostConfig } from "../../lib/config/schema";
import { TeleportError } from "../../lib/errors";
import type { Host } from "../../lib/hypervisor/host";
import { EXAMPLES, exampleOffer, type ExampleName } from "../../nrdl";
import type { Offer, Policy } from "../../nrdl/types";
import type { MigrateRequest } from "../source/agent";

function defaultPolicy(cfg: HostConfig): Policy {
  const d = cfg.defaults;
  return {
    strategy: d.strategy,
    maxParallel: d.maxParallel,
    bandwidthMbps: d.bandwidthMbps,
    downtimeLimitMs: d.downtimeLimitMs,
    timeoutS: d.timeoutS,
    onError: d.onError,
  };
}

/** The config's defaults overridden by what the operator chose; sequential means one at a time, whatever the width. */
export function policyOf(cfg: HostConfig, chosen: Partial<Policy> = {}): Policy {
  const policy = { ...defaultPolicy(cfg), ...chosen };
  return policy.strategy === "sequential" ? { ...policy, maxParallel: 1 } : policy;
}

export function planNames(cfg: HostConfig): string[] {
  return [...new Set([...Object.keys(cfg.console.plans), ...EXAMPLES])];
}

const isExample = (name: string): name is ExampleName => (EXAMPLES as readonly string[]).includes(name);

/** The request for plan `name` towards `to`; 404 when no such plan exists. */
export function namedPlan(cfg: HostConfig, host: Host, name: string, to: string): MigrateRequest {
  // own entries only: a plan name arrives from the network (console, MESSAGE trigger)
  const configured = Object.hasOwn(cfg.console.plans, name) ? cfg.console.plans[name] : undefined;
  if (configured) {
    return {
      to,
      vms: configured.vms,
      policy: policyOf(cfg, configured.strategy ? { strategy: configured.strategy } : {}),
    };
  }
  if (!isExample(name))
    throw new TeleportError(404, `no plan named ${name}`, [`known plans: ${planNames(cfg).join(", ")}`]);
  const example = exampleOffer(name).body;
  const plan: Offer = {
    ...example,
    destinationUri: to,
    vms: example.vms.map((vm) => {
      const local = host.find(vm.name)?.def;
      return local
        ? { ...vm, hypervisor: local.hypervisor, role: local.role, memoryMib: local.memoryMib, cpus: local.cpus }
        : vm;
    }),
  };
  return { to, plan };
}
