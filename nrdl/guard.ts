/** NRDL's limits for the shared hostile-input guard (xml-guard.ts), run before any parser. */
import { NRDL_MAX_BYTES, NRDL_MAX_DEPTH, type Violation } from "./types";
import { guardXml, type XmlGuardRules } from "./xml-guard";

const NRDL_RULES: XmlGuardRules = {
  documents: "NRDL documents",
  maxBytes: NRDL_MAX_BYTES,
  maxDepth: NRDL_MAX_DEPTH,
  depthHint: "the deepest NRDL path is nrdl > offer > vm > depends-on or disk, nrdl > answer > armed > export",
  cdataHint: "no NRDL element has text content",
  dtdHint: "NRDL has no DTD and no entities",
};

export function guardHostileInput(xml: string): Violation[] {
  return guardXml(xml, NRDL_RULES);
}
