/**
 * Attribute-value escaping, done here rather than by the XML library so that only the five
 * predefined entities and character references exist: no entity table, nothing to expand.
 */
import { resolveReferences } from "./xml-guard";

/** Escape for a double-quoted attribute value. */
const ESCAPES: ReadonlyMap<string, string> = new Map([
  ["<", "&lt;"],
  [">", "&gt;"],
  ["&", "&amp;"],
  ['"', "&quot;"],
]);
export function escapeAttr(value: string): string {
  return value.replace(/[&<>"]/g, (c) => ESCAPES.get(c) ?? c);
}

/** Resolve references in a raw attribute value; a string result is an error message. */
export function unescapeAttr(raw: string): { value: string } | { error: string } {
  if (raw.includes("<")) return { error: 'a raw "<" in an attribute value (write &lt;)' };
  return resolveReferences(raw);
}
