/**
 * Hostile-input checks that run BEFORE any XML parser sees the text: size, DTDs and entity
 * declarations (billion laughs, external entities), processing instructions, CDATA and nesting
 * depth. One linear pass with indexOf; each kind of finding is reported once, with its position.
 */
import { NRDL_MAX_BYTES, NRDL_MAX_DEPTH, type Violation } from "./types";

const DEPTH_PATH = "nrdl > offer > vm > depends-on or disk, nrdl > answer > armed > export";

export function guardHostileInput(xml: string): Violation[] {
  const bytes = Buffer.byteLength(xml, "utf8");
  if (bytes > NRDL_MAX_BYTES) {
    return [{ path: "/", message: `document is ${bytes} bytes; NRDL documents are at most ${NRDL_MAX_BYTES} bytes` }];
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
      report("cdata", i, "CDATA sections are not allowed (no NRDL element has text content)");
      i = endOf(xml, "]]>", i, (m) => report("unterminated", i, m));
    } else if (xml.startsWith("<!", i)) {
      // Keep scanning inside the declaration so an internal subset's <!ENTITY ...> is named too.
      const kind = /^<!(DOCTYPE|ENTITY)/.exec(xml.slice(i, i + 9))?.[1] ?? "declaration";
      report(kind, i, `<!${kind === "declaration" ? "..." : kind}> is not allowed (NRDL has no DTD and no entities)`);
      i += 2;
    } else {
      const end = tagEnd(xml, i);
      // Clamped: stray end tags must not buy an attacker extra depth (the validator rejects them later).
      if (xml[i + 1] === "/") depth = Math.max(0, depth - 1);
      else {
        if (depth + 1 > NRDL_MAX_DEPTH) {
          report(
            "depth",
            i,
            `elements nest deeper than ${NRDL_MAX_DEPTH} levels (the deepest NRDL path is ${DEPTH_PATH})`,
          );
        }
        if (xml[end - 2] !== "/") depth++;
      }
      i = end;
    }
    i = xml.indexOf("<", i);
  }
  return [...found.values()];
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
