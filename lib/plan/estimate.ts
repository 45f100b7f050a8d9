/**
 * What a plan will cost, before it runs: per VM the time to copy its memory at the bandwidth cap
 * and the pause QEMU aims for, per wave and in total. Deliberately simple (pre-copy of a quiet
 * guest is about one pass over its RAM; a busy one needs more), and it says what it assumed.
 */
import { MULTIFD_METHODS, type CompressMethod, type Offer, type Policy } from "../../nrdl/types";
import { COMPRESSION_RATIO } from "./compress";
import type { Plan } from "./waves";

/** The link assumed when the policy sets no cap (bandwidth-mbps 0). */
export const UNCAPPED_ASSUMED_MBPS = 1000;
/** Pre-copy sends RAM once and then what the guest dirtied meanwhile: a quiet guest adds about 10 %. */
const PRECOPY_OVERHEAD = 1.1;

export interface VmEstimate {
  vm: string;
  /** 1-based wave number. */
  wave: number;
  memoryMib: number;
  transferS: number;
  /** The pause QEMU converges under (the policy's downtime limit). */
  downtimeMs: number;
  /** The stream reduction assumed for this VM (nrdl/SPEC.md 5.7), when one is. */
  compress?: CompressMethod;
  /** MiB on the link: one pass and its overhead, times the method's ratio (COMPRESSION_RATIO). */
  linkMib: number;
}

export interface PlanEstimate {
  vms: VmEstimate[];
  /** Wall time of the whole plan at the policy's parallelism. */
  totalS: number;
  mbps: number;
  assumed: string;
}

/**
 * `methods`: the reduction each VM would use (the destination's preview says; else the offer's
 * first). On the link a method carries memory x its ratio. The time follows the bytes only where
 * QEMU's cap counts them: QEMU 7.2 charges multifd pages to max-bandwidth before they are
 * compressed, so under a cap zstd and zlib save link bytes, not time; without a cap the link
 * assumed is the bound and time shrinks with the bytes.
 */
export function estimatePlan(
  offer: Offer,
  plan: Plan,
  methods: ReadonlyMap<string, CompressMethod | undefined> = new Map(),
): PlanEstimate {
  const p: Policy = offer.policy;
  const mbps = p.bandwidthMbps > 0 ? p.bandwidthMbps : UNCAPPED_ASSUMED_MBPS;
  const assumed =
    p.bandwidthMbps > 0 ? `${mbps} Mbit/s per migration (the cap)` : `no cap: ${mbps} Mbit/s per migration assumed`;
  const byName = new Map(offer.vms.map((v) => [v.name, v]));
  const vms: VmEstimate[] = [];
  let totalS = 0;
  for (const wave of plan.waves) {
    const rows = wave.vms.map((name) => {
      const memoryMib = byName.get(name)?.memoryMib ?? 0;
      const compress = methods.get(name);
      const ratio = compress ? (COMPRESSION_RATIO.get(compress) ?? 1) : 1;
      const timed = compress && MULTIFD_METHODS.has(compress) && p.bandwidthMbps > 0 ? 1 : ratio;
      const transferS = (memoryMib * 2 ** 20 * 8 * PRECOPY_OVERHEAD * timed) / (mbps * 1e6);
      const linkMib = memoryMib * PRECOPY_OVERHEAD * ratio;
      return {
        vm: name,
        wave: wave.index + 1,
        memoryMib,
        transferS,
        downtimeMs: p.downtimeLimitMs,
        linkMib,
        ...(compress ? { compress } : {}),
      };
    });
    vms.push(...rows);
    // Each migration has its own cap, so parallel ones take as long as the slowest batch.
    const width = p.strategy === "sequential" ? 1 : p.strategy === "switchover" ? rows.length : p.maxParallel;
    const sorted = rows.map((r) => r.transferS).sort((a, b) => b - a);
    for (let i = 0; i < sorted.length; i += Math.max(1, width)) totalS += sorted[i];
  }
  return { vms, totalS, mbps, assumed };
}
