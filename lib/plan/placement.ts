/**
 * Where each group of VMs goes when a host is emptied across several destinations (evacuate).
 * Pure: the VMs, what each destination advertised (its capacity) and what it refused go in; an
 * assignment comes out. VMs tied by depends-on form one group and go to one destination. Largest
 * group first, each to the destination with the most memory left after taking it (spreading the
 * load, as Nova's RAM weigher does by default), ties in the order the operator named them.
 */
import type { Capacity, Hypervisor, VmSpec } from "../../nrdl/types";

export interface Group {
  vms: string[];
  memoryMib: number;
  /** Size of the disks to copy (mode copy or copy-top). */
  diskMib: number;
  /** Migration ports the destination arms: one per VM, one more per VM with copied disks (NBD). */
  ports: number;
  hypervisors: Hypervisor[];
  /** The NRDL version an offer of this group needs (copied disks need 2). */
  version: number;
}

/** What a destination can still take: its advertised capacity less what is on its way there. */
export interface Room {
  uri: string;
  memoryMib: number;
  diskMib: number;
  ports: number;
  /** VMs it defines and does not run: at most this many can arrive. */
  vms: number;
  hypervisors: readonly string[];
  versions: readonly number[];
}

export interface Placement {
  /** Destinations in the operator's order, each with the groups it gets (none listed: none). */
  assigned: Array<{ uri: string; groups: Group[] }>;
  /** Groups no destination can take now, with why (one clause per destination). */
  unplaced: Array<{ group: Group; why: string }>;
}

export interface PlaceOptions {
  /** Whether `uri` refused `vm` already (it is not offered there again). */
  refused?: (vm: string, uri: string) => boolean;
  /** The lowest NRDL version every offer needs (e.g. 2 for a convergence other than none). */
  minVersion?: number;
}

const MIB = 2 ** 20;

/** A destination's room from its capacity answer. */
export function roomOf(uri: string, c: Capacity): Room {
  const words = (s: string) => s.split(/\s+/).filter(Boolean);
  return {
    uri,
    memoryMib: c.memoryFreeMib,
    diskMib: c.diskFreeMib,
    ports: c.portsFree,
    vms: c.vmsReceivable,
    hypervisors: words(c.hypervisors),
    versions: words(c.versions).map(Number),
  };
}

/** The groups of `vms`: VMs linked by depends-on (either way, transitively) together, in the order given. */
export function groupsOf(vms: readonly VmSpec[]): Group[] {
  const root = new Map(vms.map((v) => [v.name, v.name]));
  const find = (n: string): string => {
    const parent = root.get(n) ?? n;
    if (parent === n) return n;
    const top = find(parent);
    root.set(n, top);
    return top;
  };
  for (const vm of vms)
    for (const dep of vm.dependsOn)
      if (root.has(dep) && find(dep) !== find(vm.name)) root.set(find(dep), find(vm.name));
  const members = new Map<string, VmSpec[]>();
  for (const vm of vms) members.set(find(vm.name), [...(members.get(find(vm.name)) ?? []), vm]);
  return [...members.values()].map(groupOf);
}

function groupOf(vms: VmSpec[]): Group {
  const copied = vms.flatMap((v) => v.disks.filter((d) => d.mode !== "shared").map((d) => ({ vm: v.name, d })));
  return {
    vms: vms.map((v) => v.name),
    memoryMib: vms.reduce((sum, v) => sum + v.memoryMib, 0),
    diskMib: Math.ceil(copied.reduce((sum, c) => sum + c.d.sizeBytes, 0) / MIB),
    ports: vms.length + new Set(copied.map((c) => c.vm)).size,
    hypervisors: [...new Set(vms.map((v) => v.hypervisor))],
    version: copied.length ? 2 : 1,
  };
}

/** Why `room` cannot take `group`, or undefined when it can. */
export function misfit(group: Group, room: Room, opts: PlaceOptions = {}): string | undefined {
  const refused = group.vms.filter((vm) => opts.refused?.(vm, room.uri));
  if (refused.length) return `refused ${refused.join(", ")}`;
  const version = Math.max(group.version, opts.minVersion ?? 1);
  const problems = [
    group.memoryMib > room.memoryMib && `needs ${group.memoryMib} MiB memory, ${room.memoryMib} MiB free`,
    group.diskMib > room.diskMib && `needs ${group.diskMib} MiB disk, ${room.diskMib} MiB free`,
    group.ports > room.ports && `needs ${group.ports} migration ports, ${room.ports} free`,
    group.vms.length > room.vms && `can receive ${room.vms} more VMs, the group has ${group.vms.length}`,
    ...group.hypervisors.filter((h) => !room.hypervisors.includes(h)).map((h) => `has no ${h}`),
    !room.versions.some((v) => v >= version) && `does not speak NRDL ${version}`,
  ].filter((p): p is string => typeof p === "string");
  return problems.length ? problems.join(", ") : undefined;
}

/** `room` once `group` is on its way there. */
export function take(room: Room, group: Group): Room {
  return {
    ...room,
    memoryMib: room.memoryMib - group.memoryMib,
    diskMib: room.diskMib - group.diskMib,
    ports: room.ports - group.ports,
    vms: room.vms - group.vms.length,
  };
}

export function place(groups: readonly Group[], rooms: readonly Room[], opts: PlaceOptions = {}): Placement {
  const left = new Map(rooms.map((r) => [r.uri, r]));
  const assigned = new Map<string, Group[]>(rooms.map((r) => [r.uri, []]));
  const unplaced: Placement["unplaced"] = [];
  // largest first (stable: equal groups keep the given order), so big groups are not starved by small ones
  const bySize = [...groups].sort((a, b) => b.memoryMib - a.memoryMib);
  for (const group of bySize) {
    let best: Room | undefined;
    for (const room of left.values()) {
      if (misfit(group, room, opts)) continue;
      if (!best || room.memoryMib > best.memoryMib) best = room;
    }
    if (!best) {
      const why = [...left.values()].map((r) => `${r.uri} ${misfit(group, r, opts)}`).join("; ");
      unplaced.push({ group, why: why || "no destination left to offer it to" });
      continue;
    }
    left.set(best.uri, take(best, group));
    assigned.get(best.uri)?.push(group);
  }
  return { assigned: rooms.map((r) => ({ uri: r.uri, groups: assigned.get(r.uri) ?? [] })), unplaced };
}
