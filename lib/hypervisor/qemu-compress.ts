/**
 * Per-stream reductions in QEMU 7.2 terms (nrdl/SPEC.md 5.7). zstd and zlib run over multifd: the
 * source opens `multifd-channels` extra connections to the same listener, each compressing its
 * page batches, and the destination must be armed with the same capability, method and channel
 * count before it listens (its listener then takes channels + 1 connections). Every channel is a
 * TLS session of its own with the migration's tls-creds, so each proves the dialog's secret as
 * the main stream does. XBZRLE is the source's alone: it keeps a cache of pages sent and re-sends
 * a dirtied page as its difference; any destination QEMU decodes it.
 */
import type { CompressMethod } from "../../nrdl/types";
import { TeleportError } from "../errors";
import type { StreamReduction } from "./driver";

/** What the QEMU driver applies: QEMU 7.2 (Debian builds it with zstd and zlib). */
export const QEMU_COMPRESSION: ReadonlySet<CompressMethod> = new Set<CompressMethod>(["zstd", "zlib", "xbzrle"]);

export interface Capability {
  capability: string;
  state: boolean;
}

/** The largest XBZRLE cache: QEMU's default (64 MiB); smaller guests get a power of two at most half their RAM. */
const XBZRLE_CACHE_MAX = 64 * 2 ** 20;

/** A power of two (QEMU requires one) no larger than half the guest's memory, at most 64 MiB. */
export function xbzrleCacheBytes(guestBytes: number): number {
  let size = XBZRLE_CACHE_MAX;
  while (size > 4096 && size > guestBytes / 2) size /= 2;
  return size;
}

function multifdOf(r: StreamReduction | undefined): { method: "zstd" | "zlib"; channels: number } | undefined {
  if (r?.method !== "zstd" && r?.method !== "zlib") return undefined;
  if (r.channels === undefined || r.channels < 1)
    throw new TeleportError(500, `compress ${r.method} needs its multifd channel count`);
  return { method: r.method, channels: r.channels };
}

/**
 * The capabilities a migration sets for its reduction, always both: a QEMU keeps what it was last
 * told (a VM that arrived over multifd would leave again over multifd), so the plain stream says off.
 */
export function reductionCapabilities(r: StreamReduction | undefined, outgoing: boolean): Capability[] {
  const caps = [{ capability: "multifd", state: multifdOf(r) !== undefined }];
  if (outgoing) caps.push({ capability: "xbzrle", state: r?.method === "xbzrle" });
  return caps;
}

/** migrate-set-parameters for the reduction; empty for the plain stream and for an incoming XBZRLE. */
export function reductionParameters(
  r: StreamReduction | undefined,
  guestBytes: number | undefined,
): Record<string, unknown> {
  const multifd = multifdOf(r);
  if (multifd) return { "multifd-channels": multifd.channels, "multifd-compression": multifd.method };
  if (r?.method === "xbzrle" && guestBytes !== undefined) return { "xbzrle-cache-size": xbzrleCacheBytes(guestBytes) };
  return {};
}
