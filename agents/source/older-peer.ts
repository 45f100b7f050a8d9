/**
 * A destination that predates an NRDL 2 attribute (nrdl/SPEC.md 8) refuses an offer with it by a
 * 400 that names it, or refuses NRDL 2 altogether; the source asks again without.
 */
export type NewerAttribute = "@commit" | "@compress" | "@dedup";

/** Whether a 400's reasons (its Warning text) refuse `attribute`. */
export function refusesAttribute(status: number, reasons: readonly string[], attribute: NewerAttribute): boolean {
  return status === 400 && reasons.some((r) => r.includes(attribute) || r.includes("unsupported version 2"));
}
