/** NRDL (versions 1 and 2): the language of every sip-teleport dialog (see nrdl/SPEC.md). */
export * from "./types";
export { parseNrdl, parseNrdlOrThrow, type ParseResult } from "./parse";
export { buildNrdl } from "./build";
export { validateNrdl, assertValidNrdl, formatViolation } from "./validate";
export { humanText, minimumVersion, nrdlDocument, offerDocument, type OfferInput } from "./documents";
export { exampleOffer, EXAMPLES, type ExampleName } from "./examples";
