/**
 * Group page dedup (nrdl/SPEC.md 5.8) as a negotiation, in the pattern of compress.ts: what a
 * source offers, what a destination accepts for each VM, and what a source makes of the answer.
 * A dedup move runs without QEMU's return path, so only a group commit (commit="group") may use
 * it: the source offers it only then, and the destination accepts it only when it agreed on one.
 */
import { TeleportError } from "../errors";
import { MULTIFD_METHODS, type Answer, type Armed, type CompressMethod, type Offer } from "../../nrdl/types";
import { acceptCompress, type Reduction } from "./compress";

/** What an operator asks for (`migrate --dedup`, config `defaults.dedup`). */
export const DEDUP_CHOICES = ["auto", "on", "off"] as const;
export type DedupChoice = (typeof DEDUP_CHOICES)[number];

/** The default cap of a dialog's index at the destination (migration.dedupIndexPages): 256 MiB of pages. */
export const DEDUP_INDEX_PAGES = 65_536;

/**
 * Source: the `dedup` attribute of an offer ("on", or undefined for none). `groupCommit` says the
 * offer asks for commit="group". "auto" offers it when a bandwidth cap is set (the only sign of a
 * slow link, as compress auto), the move is a group commit and some VM's driver can do it; "on"
 * offers it whenever it can be done, and refuses a plan where it cannot.
 */
export function offerDedup(
  choice: DedupChoice,
  policy: Pick<Offer["policy"], "bandwidthMbps" | "convergence">,
  groupCommit: boolean,
  drivers: ReadonlyArray<boolean | undefined>,
  capPages: number,
): "on" | undefined {
  const postcopy = policy.convergence === "postcopy";
  const any = drivers.some((d) => d === true);
  if (choice === "off") return undefined;
  const possible = groupCommit && !postcopy && any && capPages > 0;
  if (choice === "auto") return policy.bandwidthMbps > 0 && possible ? "on" : undefined;
  const why = !groupCommit
    ? 'it needs a group commit (commit="group"): use --strategy switchover, with the config\'s stateDir set'
    : postcopy
      ? "post-copy's page requests are no stream the dedup relays can read: use another --convergence"
      : !any
        ? "no driver of these VMs can apply it (only the QEMU driver dedups)"
        : capPages <= 0
          ? "this host's migration.dedupIndexPages is 0"
          : undefined;
  if (why) throw new TeleportError(400, "invalid option", [`dedup on: ${why}`]);
  return "on";
}

/**
 * Whether an offer asks for a group commit (SPEC.md 5.6): a switchover not set to commit="source",
 * from a host that can journal its half (`stateDir`).
 */
export function asksGroupCommit(policy: Pick<Offer["policy"], "strategy" | "commit">, stateDir?: string): boolean {
  return !!stateDir && policy.strategy === "switchover" && policy.commit !== "source";
}

/** The offer with commit="group" when it asks for a group commit and does not say so yet. */
export function withAskedCommit(offer: Offer, stateDir?: string): Offer {
  if (offer.policy.commit || !asksGroupCommit(offer.policy, stateDir)) return offer;
  return { ...offer, policy: { ...offer.policy, commit: "group" } };
}

/** A driver's stream reductions that go with dedup: multifd sends pages on channels the relays never see. */
function methodsBesideDedup(methods: ReadonlySet<CompressMethod> | undefined): ReadonlySet<CompressMethod> {
  return new Set([...(methods ?? [])].filter((m) => !MULTIFD_METHODS.has(m)));
}

/** A destination's choice for one VM: dedup and the stream reduction that goes with it. */
export type Reductions = Reduction & Pick<Armed, "dedup">;

/**
 * Destination: dedup for this VM when the offer says dedup="on", the dialog agreed on group
 * commit, this host keeps an index (`capPages` > 0), the driver can do it and the move is no
 * post-copy; then compression only among the methods that go with it. Else compression alone.
 */
export function acceptReductions(
  offer: Offer,
  driver: { compression?: ReadonlySet<CompressMethod>; dedup?: boolean } | undefined,
  groupCommit: boolean,
  capPages: number,
): Reductions {
  const dedup =
    offer.policy.dedup === "on" &&
    groupCommit &&
    capPages > 0 &&
    driver?.dedup === true &&
    offer.policy.convergence !== "postcopy";
  if (!dedup) return acceptCompress(offer, driver?.compression);
  return { ...acceptCompress(offer, methodsBesideDedup(driver.compression)), dedup: "on" };
}

/**
 * Source: check the answer's dedup for one VM. Only an offered dedup, under the group commit the
 * answer agreed to, with a driver here that can do it, is used; anything else is a broken answer (502).
 */
export function answeredDedup(
  offer: Offer,
  answer: Pick<Answer, "commit">,
  armed: Armed,
  driver: boolean | undefined,
): string | undefined {
  if (armed.dedup === undefined) return undefined;
  if (offer.policy.dedup !== "on") return `${armed.vm}: the answer chose dedup, which the offer did not ask for`;
  if (answer.commit !== "group") return `${armed.vm}: the answer chose dedup without commit="group"`;
  if (driver !== true) return `${armed.vm}: the answer chose dedup, which this host's driver cannot apply`;
  return undefined;
}

/** Source: the answer's dedup-link is one the offer listed (else a broken answer, 502), or none. */
export function answeredDedupLink(offer: Offer, answer: Pick<Answer, "dedupLink">): string | undefined {
  if (answer.dedupLink === undefined || answer.dedupLink === offer.policy.dedupLink) return undefined;
  return `the answer chose dedup-link="${answer.dedupLink}", which the offer did not list`;
}

/** Remove what older destinations refuse (SPEC.md 8): the offer again, without `dedup`. */
export function withoutDedup(offer: Offer): Offer {
  const { dedup: _dropped, dedupLink: _alsoDropped, ...policy } = offer.policy;
  return { ...offer, policy };
}
