/**
 * Per-stream reductions (nrdl/SPEC.md 5.7): what a source offers, what a destination accepts for
 * each VM, and what a source makes of the answer. Pure functions: the agents call them with their
 * drivers' abilities, the tests with sets of their own.
 *
 * Names come off the network: they are checked against COMPRESS_METHODS (a Set) and never used to
 * index a plain object.
 */
import { TeleportError } from "../errors";
import type { StreamReduction } from "../hypervisor/driver";
import {
  COMPRESS_METHODS,
  MULTIFD_METHODS,
  type Armed,
  type CompressMethod,
  type Convergence,
  type Offer,
} from "../../nrdl/types";

/** What an operator asks for (`migrate --compress`, config `defaults.compress`). */
export const COMPRESS_CHOICES = ["auto", "none", ...COMPRESS_METHODS] as const;
export type CompressChoice = (typeof COMPRESS_CHOICES)[number];

/** The order "auto" offers them in: best ratio per CPU first (zstd), XBZRLE last (it only helps re-sent pages). */
export const AUTO_ORDER: readonly CompressMethod[] = ["zstd", "zlib", "xbzrle"];

/**
 * Multifd channels a destination arms for zstd/zlib. QEMU's default, and what a 2-core host can
 * feed: each channel compresses in a thread of its own on the source.
 */
export const MULTIFD_CHANNELS = 2;

/**
 * Bytes on the link per byte of guest memory, for the dry run's estimate. zlib and zstd: 0.39x,
 * issue 26's figure for zlib level 1 on the test guests' non-zero pages (three 96 MiB guests,
 * `pmemsave` after 25 s). Measured again here (three fresh test guests, 25 s, QMP pmemsave, 12,947
 * non-zero pages each): zlib level 1 0.275x, zstd level 1 0.286x as one stream (QEMU keeps one
 * compression context per multifd channel), zlib per 4 KiB page 0.307x. zstd is within 4 % of zlib,
 * so the more cautious 0.39x stands for both. XBZRLE sends the first pass in full and
 * reduces only re-sent pages: 1.0 for a one-pass estimate.
 */
export const COMPRESSION_RATIO: ReadonlyMap<CompressMethod, number> = new Map<CompressMethod, number>([
  ["zstd", 0.39],
  ["zlib", 0.39],
  ["xbzrle", 1],
]);

const KNOWN: ReadonlySet<string> = new Set<string>(COMPRESS_METHODS);

function isMethod(word: string): word is CompressMethod {
  return KNOWN.has(word);
}

/** The methods an offer's policy lists, in its order; [] when it offers none. */
export function offeredMethods(policy: Offer["policy"]): CompressMethod[] {
  return (policy.compress ?? "").split(" ").filter(isMethod);
}

/**
 * Multifd does not go with post-copy in QEMU 7.2: post-copy pages never use its channels, and a
 * post-copy recovery (`migrate` with resume) reconnects the main channel only. With
 * convergence=postcopy only XBZRLE is possible.
 */
export function possibleWith(convergence: Convergence | undefined, method: CompressMethod): boolean {
  return !(convergence === "postcopy" && MULTIFD_METHODS.has(method));
}

/**
 * Source: the `compress` attribute of an offer, or undefined for none. "auto" (the policy's
 * default, SPEC.md 5.7) offers, when a bandwidth cap is set, what any offered VM's driver can do:
 * the destination answers per VM and never with a method the VM's driver lacks, so a libvirt VM
 * of the group moves plain beside compressed QEMU ones. Nothing without a cap, nor with post-copy
 * (XBZRLE across a post-copy recovery is not tested here: that stays an explicit choice). A method
 * named explicitly is offered alone, and refused here when no driver of these VMs can do it.
 */
export function offerCompress(
  choice: CompressChoice,
  policy: Pick<Offer["policy"], "bandwidthMbps" | "convergence">,
  drivers: ReadonlyArray<ReadonlySet<CompressMethod> | undefined>,
): string | undefined {
  if (choice === "none") return undefined;
  const any = (m: CompressMethod) => drivers.some((d) => d?.has(m) ?? false);
  if (choice === "auto") {
    if (policy.bandwidthMbps <= 0 || policy.convergence === "postcopy") return undefined;
    const methods = AUTO_ORDER.filter(any);
    return methods.length ? methods.join(" ") : undefined;
  }
  if (!any(choice))
    throw new TeleportError(400, "invalid option", [
      `--compress ${choice}: no driver of these VMs can apply it (only the QEMU driver compresses)`,
    ]);
  if (!possibleWith(policy.convergence, choice))
    throw new TeleportError(400, "invalid option", [
      `--compress ${choice} runs over multifd, which QEMU 7.2 does not combine with post-copy; ` +
        "use --compress xbzrle or another convergence",
    ]);
  return choice;
}

/** A destination's choice for one VM: how its stream is reduced (absent: the plain stream). */
export type Reduction = Pick<Armed, "compress" | "channels">;

/** The same choice in the drivers' terms (ArmOptions, MigrationOptions); undefined for the plain stream. */
export function streamReductionOf(r: Reduction): StreamReduction | undefined {
  return r.compress ? { method: r.compress, channels: r.channels } : undefined;
}

/**
 * Destination: the first offered method (the source's order of preference) this VM's driver can
 * apply and the policy allows; none when there is no such method. A version-1 offer never has any.
 */
export function acceptCompress(offer: Offer, driver: ReadonlySet<CompressMethod> | undefined): Reduction {
  const method = offeredMethods(offer.policy).find(
    (m) => (driver?.has(m) ?? false) && possibleWith(offer.policy.convergence, m),
  );
  if (method === undefined) return {};
  return MULTIFD_METHODS.has(method) ? { compress: method, channels: MULTIFD_CHANNELS } : { compress: method };
}

/**
 * Source: check the answer's reduction for one VM. Only an offered method its own driver can apply
 * is used; anything else is a broken answer (502), never a silent change of stream.
 */
export function answeredReduction(
  offer: Offer,
  armed: Armed,
  driver: ReadonlySet<CompressMethod> | undefined,
): string | undefined {
  if (armed.compress === undefined) return undefined;
  if (!offeredMethods(offer.policy).includes(armed.compress))
    return `${armed.vm}: the answer chose compress ${armed.compress}, which the offer did not list`;
  if (!(driver?.has(armed.compress) ?? false))
    return `${armed.vm}: the answer chose compress ${armed.compress}, which this host's driver cannot apply`;
  return undefined;
}

/** Remove what older destinations refuse (SPEC.md 8): the offer again, without `compress`. */
export function withoutCompress(offer: Offer): Offer {
  const { compress: _dropped, ...policy } = offer.policy;
  return { ...offer, policy };
}
