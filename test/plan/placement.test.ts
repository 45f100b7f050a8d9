import type { DiskSpec, VmSpec } from "../../nrdl/types";
import { groupsOf, misfit, place, roomOf, take, type Room } from "../../lib/plan/placement";

const vm = (name: string, memoryMib: number, dependsOn: string[] = [], disks: DiskSpec[] = []): VmSpec => ({
  name,
  role: "server",
  dependsOn,
  disks,
  hypervisor: "qemu",
  memoryMib,
  cpus: 1,
});
const room = (uri: string, memoryMib: number, more: Partial<Room> = {}): Room => ({
  uri,
  memoryMib,
  diskMib: 10_000,
  ports: 50,
  vms: 50,
  hypervisors: ["qemu"],
  versions: [1, 2],
  ...more,
});
const names = (p: ReturnType<typeof place>) => p.assigned.map((a) => [a.uri, a.groups.map((g) => g.vms.join("+"))]);

describe("groupsOf", () => {
  it("keeps VMs linked by depends-on together, either way and transitively (exp3), singletons alone", () => {
    const groups = groupsOf([
      vm("web", 512, ["router-switch"]),
      vm("solo", 96),
      vm("router-switch", 256, ["firewall"]),
      vm("storage", 512, ["firewall"]),
      vm("firewall", 256),
    ]);
    expect(groups.map((g) => [g.vms, g.memoryMib])).toEqual([
      [["web", "router-switch", "storage", "firewall"], 1536],
      [["solo"], 96],
    ]);
  });

  it("ignores a dependency on a VM that is not moving (it is not on this host)", () => {
    expect(groupsOf([vm("video", 512, ["router1"])]).map((g) => g.vms)).toEqual([["video"]]);
  });

  it("counts copied disks: their size, one NBD port per VM, NRDL 2", () => {
    const disk = (mode: DiskSpec["mode"], mib: number): DiskSpec => ({
      target: "vda",
      sizeBytes: mib * 2 ** 20,
      format: "qcow2",
      mode,
    });
    const [g] = groupsOf([vm("a", 96, [], [disk("copy", 100)]), vm("b", 96, ["a"], [disk("shared", 5000)])]);
    expect(g).toMatchObject({ diskMib: 100, ports: 3, version: 2 });
    expect(groupsOf([vm("c", 96, [], [disk("shared", 5000)])])[0]).toMatchObject({ diskMib: 0, ports: 1, version: 1 });
  });
});

describe("place", () => {
  it("spreads: largest group first, each to the destination with the most memory left", () => {
    const groups = groupsOf([vm("a", 1000), vm("b", 600), vm("c", 500), vm("d", 100)]);
    const p = place(groups, [room("sip:dc2", 2000), room("sip:dc3", 1500)]);
    // a -> dc2 (1000 left), b -> dc3 (900 left), c -> dc2 (500 left), d -> dc3 (800 left)
    expect(names(p)).toEqual([
      ["sip:dc2", ["a", "c"]],
      ["sip:dc3", ["b", "d"]],
    ]);
    expect(p.unplaced).toEqual([]);
  });

  it("breaks ties in the operator's order", () => {
    const p = place(groupsOf([vm("a", 100)]), [room("sip:dc3", 1000), room("sip:dc2", 1000)]);
    expect(names(p)).toEqual([
      ["sip:dc3", ["a"]],
      ["sip:dc2", []],
    ]);
  });

  it("never splits a group, and says why a group fits nowhere", () => {
    const groups = groupsOf([vm("router1", 300), vm("video", 300, ["router1"]), vm("solo", 100)]);
    const p = place(groups, [room("sip:dc2", 500), room("sip:dc3", 400, { ports: 1 })]);
    expect(names(p)).toEqual([
      ["sip:dc2", ["solo"]],
      ["sip:dc3", []],
    ]);
    expect(p.unplaced).toEqual([
      {
        group: expect.objectContaining({ vms: ["router1", "video"] }),
        why:
          "sip:dc2 needs 600 MiB memory, 500 MiB free; " +
          "sip:dc3 needs 600 MiB memory, 400 MiB free, needs 2 migration ports, 1 free",
      },
    ]);
  });

  it("does not offer a VM again where it was refused; the rest of its destination stays usable", () => {
    const groups = groupsOf([vm("a", 100), vm("b", 100)]);
    const refused = (name: string, uri: string) => name === "a" && uri === "sip:dc3";
    const p = place(groups, [room("sip:dc3", 5000), room("sip:dc2", 1000)], { refused });
    expect(names(p)).toEqual([
      ["sip:dc3", ["b"]],
      ["sip:dc2", ["a"]],
    ]);
    const nowhere = place(groupsOf([vm("a", 100)]), [room("sip:dc3", 5000)], { refused });
    expect(nowhere.unplaced[0].why).toBe("sip:dc3 refused a");
  });

  it("checks hypervisors, receivable VMs, disk space and NRDL versions", () => {
    const [g] = groupsOf([vm("a", 100), vm("b", 100, ["a"])]);
    expect(misfit(g, room("x", 1000, { hypervisors: ["libvirt"] }))).toBe("has no qemu");
    expect(misfit(g, room("x", 1000, { vms: 1 }))).toBe("can receive 1 more VMs, the group has 2");
    expect(misfit(g, room("x", 1000, { versions: [1] }), { minVersion: 2 })).toBe("does not speak NRDL 2");
    expect(misfit({ ...g, diskMib: 20 }, room("x", 1000, { diskMib: 10 }))).toBe("needs 20 MiB disk, 10 MiB free");
    expect(misfit(g, room("x", 1000))).toBeUndefined();
  });

  it("reads a capacity answer, and takes a group's needs off a room", () => {
    const r = roomOf("sip:dc2", {
      kind: "capacity",
      host: "dc2",
      memoryFreeMib: 1000,
      diskFreeMib: 50,
      portsFree: 10,
      vmsReceivable: 3,
      hypervisors: "qemu libvirt",
      versions: "1 2",
    });
    expect(r).toEqual(room("sip:dc2", 1000, { diskMib: 50, ports: 10, vms: 3, hypervisors: ["qemu", "libvirt"] }));
    const [g] = groupsOf([vm("a", 300), vm("b", 100, ["a"])]);
    expect(take(r, g)).toMatchObject({ memoryMib: 600, ports: 8, vms: 1, diskMib: 50 });
  });
});
