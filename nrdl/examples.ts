/**
 * Offers for the thesis experiments: exp1 two routers; exp2 a router and a video server;
 * exp3 the edge network, where the firewall and the router must move before the servers behind them.
 */
import { offerDocument } from "./documents";
import type { NrdlDocument, Offer, VmSpec } from "./types";

export const EXAMPLES = ["exp1", "exp2", "exp3"] as const;
export type ExampleName = (typeof EXAMPLES)[number];

type VmInput = Pick<VmSpec, "name" | "role" | "memoryMib"> & Partial<VmSpec>;

const VMS: Record<ExampleName, VmInput[]> = {
  exp1: [
    { name: "router1", role: "router", memoryMib: 256 },
    { name: "router2", role: "router", memoryMib: 256 },
  ],
  exp2: [
    { name: "router1", role: "router", memoryMib: 256 },
    { name: "video", role: "server", memoryMib: 512, dependsOn: ["router1"] },
  ],
  exp3: [
    { name: "firewall", role: "firewall", memoryMib: 256 },
    { name: "router-switch", role: "router", memoryMib: 256, dependsOn: ["firewall"] },
    { name: "storage", role: "storage", memoryMib: 512, dependsOn: ["firewall", "router-switch"] },
    { name: "web", role: "server", memoryMib: 512, dependsOn: ["firewall", "router-switch"] },
  ],
};

export function exampleOffer(name: ExampleName): NrdlDocument<Offer> {
  return offerDocument({
    id: `mig-${name}`,
    sourceUri: "sip:dc1@10.10.10.66",
    destinationUri: "sip:dc2@10.10.10.67",
    vms: VMS[name],
  });
}
