/**
 * Ordering: which VMs may move together. Explicit `depends-on` comes first; then roles, because
 * the thesis found that network functions (router, switch, firewall, nat) must be in place at the
 * destination before the servers behind them move. A role edge that would contradict an explicit
 * dependency is dropped: the operator's word wins.
 */
import type { Offer, Role, VmSpec } from "../../nrdl/types";
import { TeleportError } from "../errors";

export const NETWORK_ROLES: ReadonlySet<Role> = new Set<Role>(["router", "switch", "firewall", "nat"]);

export interface Wave {
  index: number;
  vms: string[];
}

export interface Plan {
  waves: Wave[];
  /** For each VM, the VMs it waits for (explicit and role-derived), for explanations and skip decisions. */
  prerequisites: Map<string, Set<string>>;
}

function reaches(edges: Map<string, Set<string>>, from: string, to: string): boolean {
  const seen = new Set<string>();
  const stack = [from];
  while (stack.length) {
    const n = stack.pop() as string;
    if (n === to) return true;
    if (seen.has(n)) continue;
    seen.add(n);
    for (const m of edges.get(n) ?? []) stack.push(m);
  }
  return false;
}

/** Group the offer's VMs into waves: every VM's prerequisites are in earlier waves. */
export function planWaves(vms: readonly VmSpec[]): Plan {
  const names = vms.map((v) => v.name);
  // prerequisites: vm -> the VMs that must move before it
  const prereq = new Map<string, Set<string>>(names.map((n) => [n, new Set<string>()]));
  for (const vm of vms) {
    for (const dep of vm.dependsOn) {
      if (!prereq.has(dep)) throw new TeleportError(400, "invalid plan", [`${vm.name} depends on unknown VM ${dep}`]);
      prereq.get(vm.name)?.add(dep);
    }
  }
  const network = vms.filter((v) => NETWORK_ROLES.has(v.role));
  const others = vms.filter((v) => !NETWORK_ROLES.has(v.role));
  for (const o of others) {
    for (const n of network) {
      // n must not (transitively) wait for o already: then the role edge would create a cycle.
      if (!reaches(prereq, n.name, o.name)) prereq.get(o.name)?.add(n.name);
    }
  }
  const waves: Wave[] = [];
  const placed = new Set<string>();
  while (placed.size < names.length) {
    const ready = names.filter((n) => !placed.has(n) && [...(prereq.get(n) ?? [])].every((d) => placed.has(d)));
    if (ready.length === 0) {
      const stuck = names.filter((n) => !placed.has(n));
      throw new TeleportError(400, "invalid plan", [`dependency cycle among ${stuck.join(", ")}`]);
    }
    ready.forEach((n) => placed.add(n));
    waves.push({ index: waves.length, vms: ready });
  }
  return { waves, prerequisites: prereq };
}

export function planOffer(offer: Offer): Plan {
  return planWaves(offer.vms);
}

/** One line per wave, for --dry-run and logs. */
export function describePlan(plan: Plan, strategy: string, maxParallel: number): string[] {
  return plan.waves.map((w) => {
    const how =
      strategy === "sequential"
        ? "one at a time"
        : strategy === "parallel"
          ? `up to ${maxParallel} at once`
          : `pre-copy with the whole group, stop with it, resume ${w.index === 0 ? "first" : "after wave " + w.index}`;
    return `wave ${w.index + 1}: ${w.vms.join(", ")} (${how})`;
  });
}
