/**
 * Attribute-value escaping, done here rather than by the XML library so that only the five
 * predefined entities and character references exist: no entity table, nothing to expand.
 */
const PREDEFINED: ReadonlyMap<string, string> = new Map([
  ["lt", "<"],
  ["gt", ">"],
  ["amp", "&"],
  ["quot", '"'],
  ["apos", "'"],
]);

/** Escape for a double-quoted attribute value. */
const ESCAPES: Record<string, string> = { "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" };
export function escapeAttr(value: string): string {
  return value.replace(/[&<>"]/g, (c) => ESCAPES[c]);
}

/** Resolve references in a raw attribute value; a string result is an error message. */
export function unescapeAttr(raw: string): { value: string } | { error: string } {
  if (raw.includes("<")) return { error: 'a raw "<" in an attribute value (write &lt;)' };
  let bad: string | undefined;
  const value = raw.replace(/&([^;&\s]{0,10});?/g, (ref: string, name: string) => {
    if (!ref.endsWith(";")) bad ??= `an unterminated reference ${JSON.stringify(ref)} (write &amp; for "&")`;
    else if (PREDEFINED.has(name)) return PREDEFINED.get(name) as string;
    else if (/^#([0-9]{1,7}|x[0-9A-Fa-f]{1,6})$/.test(name)) {
      const code = name[1] === "x" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      if (code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff)) return String.fromCodePoint(code);
      bad ??= `an invalid character reference ${ref}`;
    } else bad ??= `an undefined entity ${ref} (only &lt; &gt; &amp; &quot; &apos; and &#N; exist)`;
    return ref;
  });
  return bad === undefined ? { value } : { error: bad };
}
