/**
 * The thesis' three experiments as testbed topologies. All guests share the L2 segment
 * 10.10.0.0/24; servers "behind" a router or firewall live in their own subnet and route
 * through it (a one-armed router), and the user reaches that subnet only through it.
 */
import type { Role } from "../../nrdl/types";
import type { ProbeKind } from "./probes";

export type ExperimentName = "exp1" | "exp2" | "exp3";
export const EXPERIMENTS: readonly ExperimentName[] = ["exp1", "exp2", "exp3"];

export interface GuestSpec {
  name: string;
  role: Role;
  /** The address the user probes, with its prefix length. */
  ip: string;
  /** More addresses (the router's side towards its subnet). */
  addr?: string[];
  gw?: string;
  /** Forward between subnets (routers, firewalls). */
  forward?: boolean;
  /** Serve the UDP echo that carries the user's stream (adds socat to the guest). */
  udpEcho?: boolean;
  /** Probes the user runs against this guest. */
  probes: ProbeKind[];
  /**
   * Has a disk local to its host (a qcow2 image on each, mode copy) when the lab is built with
   * disks (LabOptions.disks, bench:thesis with BENCH_DISKS=1); its guest writes to it throughout.
   */
  disk?: boolean;
}

/** What the thesis reported, for the comparison table. */
export interface ThesisFigures {
  pingsLost: number;
  pingIntervalMs: number;
  /** Pings lost x interval. */
  lossMs: number;
  /** exp2 only: video stream interruption. */
  videoMs?: number;
}

export interface Experiment {
  name: ExperimentName;
  title: string;
  guests: GuestSpec[];
  /** User routes to the subnets behind routers: CIDR -> gateway. */
  userRoutes: Record<string, string>;
  thesis: ThesisFigures;
}

export const EXPERIMENT: Record<ExperimentName, Experiment> = {
  exp1: {
    name: "exp1",
    title: "exp1: two routers",
    guests: [
      { name: "router1", role: "router", ip: "10.10.0.11/24", forward: true, probes: ["ping", "tcp"] },
      { name: "router2", role: "router", ip: "10.10.0.12/24", forward: true, probes: ["ping", "tcp"] },
    ],
    userRoutes: {},
    thesis: { pingsLost: 1, pingIntervalMs: 500, lossMs: 500 },
  },
  exp2: {
    name: "exp2",
    title: "exp2: router + video server behind it",
    guests: [
      { name: "router1", role: "router", ip: "10.10.0.11/24", addr: ["10.20.0.1/24"], forward: true, probes: ["ping"] },
      {
        name: "video",
        role: "server",
        ip: "10.20.0.10/24",
        gw: "10.20.0.1",
        udpEcho: true,
        probes: ["ping", "tcp", "udp"],
      },
    ],
    userRoutes: { "10.20.0.0/24": "10.10.0.11" },
    thesis: { pingsLost: 31, pingIntervalMs: 100, lossMs: 3100, videoMs: 6500 },
  },
  exp3: {
    name: "exp3",
    title: "exp3: firewall, router, web behind the firewall, storage",
    guests: [
      {
        name: "firewall",
        role: "firewall",
        ip: "10.10.0.21/24",
        addr: ["10.30.0.1/24"],
        forward: true,
        probes: ["ping"],
      },
      { name: "router", role: "router", ip: "10.10.0.22/24", forward: true, probes: ["ping"] },
      { name: "web", role: "server", ip: "10.30.0.10/24", gw: "10.30.0.1", probes: ["ping", "tcp"], disk: true },
      { name: "storage", role: "storage", ip: "10.10.0.24/24", probes: ["ping", "tcp"], disk: true },
    ],
    userRoutes: { "10.30.0.0/24": "10.10.0.21" },
    thesis: { pingsLost: 3, pingIntervalMs: 500, lossMs: 1500 },
  },
};

/** The guest's address without its prefix length. */
export function hostAddress(g: GuestSpec): string {
  return g.ip.split("/")[0];
}

/** Kernel command-line options for the guest image (see build-guest.sh). */
export function guestAppend(g: GuestSpec): string {
  const opts = [`st.ip=${g.ip}`];
  if (g.addr?.length) opts.push(`st.addr=${g.addr.join(",")}`);
  if (g.gw) opts.push(`st.gw=${g.gw}`);
  if (g.forward) opts.push("st.fwd=1");
  if (g.udpEcho) opts.push("st.udpecho=7");
  return opts.join(" ");
}
