import type { Role, VmSpec } from "../../nrdl/types";
import { describePlan, planWaves } from "../../lib/plan/waves";

const vm = (name: string, role: Role, dependsOn: string[] = []): VmSpec => ({
  name,
  role,
  dependsOn,
  disks: [],
  hypervisor: "qemu",
  memoryMib: 96,
  cpus: 1,
});

describe("planWaves", () => {
  it("moves network functions before the servers behind them (thesis exp2)", () => {
    const plan = planWaves([vm("video", "server"), vm("router1", "router")]);
    expect(plan.waves.map((w) => w.vms)).toEqual([["router1"], ["video"]]);
  });

  it("keeps independent VMs of one kind in one wave (exp1: two routers)", () => {
    const plan = planWaves([vm("router1", "router"), vm("router2", "router")]);
    expect(plan.waves.map((w) => w.vms)).toEqual([["router1", "router2"]]);
  });

  it("layers explicit dependencies (exp3: firewall, then router, then web and storage)", () => {
    const plan = planWaves([
      vm("web", "server", ["firewall"]),
      vm("storage", "storage"),
      vm("router-switch", "router", ["firewall"]),
      vm("firewall", "firewall"),
    ]);
    expect(plan.waves.map((w) => w.vms)).toEqual([["firewall"], ["router-switch"], ["web", "storage"]]);
  });

  it("lets an explicit dependency override the role order instead of making a cycle", () => {
    const plan = planWaves([vm("dhcp", "server"), vm("router1", "router", ["dhcp"])]);
    expect(plan.waves.map((w) => w.vms)).toEqual([["dhcp"], ["router1"]]);
  });

  it("names the VMs of a dependency cycle", () => {
    expect(() => planWaves([vm("a", "server", ["b"]), vm("b", "server", ["a"]), vm("c", "server")])).toThrow(
      /cycle among a, b/,
    );
  });

  it("refuses a dependency on a VM outside the group", () => {
    expect(() => planWaves([vm("a", "server", ["ghost"])])).toThrow(/unknown VM ghost/);
  });

  it("describes each wave for the operator", () => {
    const plan = planWaves([vm("video", "server"), vm("router1", "router")]);
    expect(describePlan(plan, "parallel", 2)).toEqual([
      "wave 1: router1 (up to 2 at once)",
      "wave 2: video (up to 2 at once)",
    ]);
  });
});
