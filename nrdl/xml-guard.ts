/**
 * Hostile-input checks that run BEFORE any XML parser sees the text, shared by NRDL and the
 * libvirt RPC gate (domain definitions, migration cookies): size, DTDs and entity declarations
 * (billion laughs, external entities), processing instructions, CDATA and nesting depth. One
 * linear pass with indexOf; each kind of finding is reported once, with its position. Also the
 * one reference resolver both use: without a DTD only the five predefined entities exist.
 */
import type { Violation } from "./types";

export interface XmlGuardRules {
  /** What the documents are called in messages ("NRDL documents", "libvirt domain definitions"). */
  documents: string;
  maxBytes: number;
  maxDepth: number;
  /** Said after the depth refusal: why that depth is enough. */
  depthHint: string;
  /** Said after the CDATA refusal: why the vocabulary needs none. */
  cdataHint: string;
  /** Said after the DOCTYPE/ENTITY refusal, inside the parentheses. */
  dtdHint: string;
}

export function guardXml(xml: string, rules: XmlGuardRules): Violation[] {
  const bytes = Buffer.byteLength(xml, "utf8");
  if (bytes > rules.maxBytes) {
    return [
      { path: "/", message: `document is ${bytes} bytes; ${rules.documents} are at most ${rules.maxBytes} bytes` },
    ];
  }
  const found = new Map<string, Violation>();
  const report = (kind: string, at: number, message: string): void => {
    if (!found.has(kind)) found.set(kind, { path: "/", message: `${position(xml, at)}: ${message}` });
  };
  const start = xml.charCodeAt(0) === 0xfeff ? 1 : 0;
  let depth = 0;
  let i = xml.indexOf("<", start);
  while (i !== -1 && i < xml.length) {
    if (xml.startsWith("<?", i)) {
      const end = endOf(xml, "?>", i, (m) => report("unterminated", i, m));
      checkDeclaration(xml.slice(i, end), i === start, (m) => report("pi", i, m));
      i = end;
    } else if (xml.startsWith("<!--", i)) {
      i = endOf(xml, "-->", i, (m) => report("unterminated", i, m));
    } else if (xml.startsWith("<![CDATA[", i)) {
      report("cdata", i, `CDATA sections are not allowed (${rules.cdataHint})`);
      i = endOf(xml, "]]>", i, (m) => report("unterminated", i, m));
    } else if (xml.startsWith("<!", i)) {
      // Keep scanning inside the declaration so an internal subset's <!ENTITY ...> is named too.
      const kind = /^<!(DOCTYPE|ENTITY)/.exec(xml.slice(i, i + 9))?.[1] ?? "declaration";
      report(kind, i, `<!${kind === "declaration" ? "..." : kind}> is not allowed (${rules.dtdHint})`);
      i += 2;
    } else {
      const end = tagEnd(xml, i);
      // Clamped: stray end tags must not buy an attacker extra depth (the parser rejects them later).
      if (xml[i + 1] === "/") depth = Math.max(0, depth - 1);
      else {
        if (depth + 1 > rules.maxDepth)
          report("depth", i, `elements nest deeper than ${rules.maxDepth} levels (${rules.depthHint})`);
        if (xml[end - 2] !== "/") depth++;
      }
      i = end;
    }
    i = xml.indexOf("<", i);
  }
  return [...found.values()];
}

const PREDEFINED: ReadonlyMap<string, string> = new Map([
  ["lt", "<"],
  ["gt", ">"],
  ["amp", "&"],
  ["quot", '"'],
  ["apos", "'"],
]);

/** Resolve references in raw text or an attribute value; `error` says what is wrong. */
export function resolveReferences(raw: string): { value: string } | { error: string } {
  if (raw.includes("<")) return { error: 'a raw "<" (write &lt;)' };
  let bad: string | undefined;
  const value = raw.replace(/&([^;&\s]{0,10});?/g, (ref: string, name: string) => {
    const predefined = PREDEFINED.get(name);
    if (!ref.endsWith(";")) bad ??= `an unterminated reference ${JSON.stringify(ref)} (write &amp; for "&")`;
    else if (predefined !== undefined) return predefined;
    else if (/^#([0-9]{1,7}|x[0-9A-Fa-f]{1,6})$/.test(name)) {
      const code = name[1] === "x" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      if (code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff)) return String.fromCodePoint(code);
      bad ??= `an invalid character reference ${ref}`;
    } else bad ??= `an undefined entity ${ref} (only &lt; &gt; &amp; &quot; &apos; and &#N; exist)`;
    return ref;
  });
  return bad === undefined ? { value } : { error: bad };
}

/** Index just after `terminator`, or the end of the text (and a complaint) when it never comes. */
function endOf(xml: string, terminator: string, from: number, fail: (message: string) => void): number {
  const at = xml.indexOf(terminator, from + 2);
  if (at !== -1) return at + terminator.length;
  fail(`unterminated markup: no "${terminator}" after this point`);
  return xml.length;
}

/** Index just after the `>` closing the tag that starts at `from`, skipping quoted attribute values. */
function tagEnd(xml: string, from: number): number {
  for (let j = from + 1; j < xml.length; j++) {
    const c = xml[j];
    if (c === '"' || c === "'") {
      j = xml.indexOf(c, j + 1);
      if (j === -1) return xml.length;
    } else if (c === ">") return j + 1;
  }
  return xml.length;
}

/** The only processing instruction allowed is a leading XML declaration, and it must say UTF-8 if anything. */
function checkDeclaration(pi: string, atStart: boolean, fail: (message: string) => void): void {
  if (!/^<\?xml\s/.test(pi)) {
    fail("processing instructions are not allowed (only a leading <?xml ...?> declaration)");
  } else if (!atStart) {
    fail("the XML declaration must come first");
  } else {
    const encoding = /\sencoding\s*=\s*["']([^"']*)["']/.exec(pi)?.[1];
    if (encoding !== undefined && !/^utf-8$/i.test(encoding))
      fail(`encoding must be UTF-8, got ${JSON.stringify(encoding)}`);
  }
}

function position(xml: string, at: number): string {
  let line = 1;
  let lineStart = 0;
  for (let k = xml.indexOf("\n"); k !== -1 && k < at; k = xml.indexOf("\n", k + 1)) {
    line++;
    lineStart = k + 1;
  }
  return `line ${line}, column ${at - lineStart + 1}`;
}

/**
 * fast-xml-parser's options for a guarded document, in document order: attributes as written (no type
 * coercion, no trimming), no entity processing (resolveReferences does the five predefined ones), comments kept
 * apart so they never count as content.
 */
export const ORDERED_XML_OPTIONS = {
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: "",
  allowBooleanAttributes: false,
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  processEntities: false,
  htmlEntities: false,
  ignoreDeclaration: true,
  commentPropName: "#comment",
} as const;
