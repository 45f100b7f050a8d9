/**
 * sip.js' message parser is a peggy-generated grammar whose `parse()` builds the whole grammar on
 * every call: ~800 constants (literals, regular expressions, action closures) and ~230 bytecode
 * arrays decoded from strings. The core calls it for the start line and for every structured
 * header of every message, so that set-up, not parsing, was most of an agent's CPU under load.
 *
 * `useCachedSipGrammar()` compiles the very same generated file of the installed sip.js once more,
 * with that set-up hoisted out of `parse()` so it runs once, and puts it behind sip.js' own
 * `Grammar.parse` (every caller in sip.js goes through that property). Only the per-call state
 * (input, position, failure bookkeeping) is reset for each call. The rewrite is anchored on exact
 * fragments of the generated file: if sip.js changes its layout, nothing is replaced and the
 * reason says so (sip.js keeps parsing with its own, slower path).
 */
import fs from "node:fs";
import path from "node:path";
import { Grammar, NameAddrHeader, URI } from "sip.js";

type GrammarParse = (input: string, startRule: string) => unknown;
type PegParse = (input: string, options: { startRule: string; data?: unknown }) => unknown;

export type GrammarCacheState = { cached: true } | { cached: false; reason: string };

const sipJsParse: GrammarParse = Grammar.parse.bind(Grammar);
let cachedParse: GrammarParse | undefined;
let failure: string | undefined;

function grammarFile(): string {
  // lib/index.js -> lib/grammar/pegjs/dist/grammar.js (the package's exports map does not list it)
  return path.join(path.dirname(require.resolve("sip.js")), "grammar", "pegjs", "dist", "grammar.js");
}

function replaceOnce(source: string, from: string | RegExp, to: string, what: string): string {
  const hits = typeof from === "string" ? source.split(from).length - 1 : (source.match(from) ?? []).length;
  if (hits !== 1) throw new Error(`${what}: expected once in sip.js' generated grammar, found ${hits} times`);
  return source.replace(from, () => to);
}

/** The generated module turned into `function peg$grammar()` that builds once and returns `parse`. */
export function rewriteGrammar(source: string): string {
  let s = source;
  s = replaceOnce(s, 'import { NameAddrHeader } from "../../name-addr-header.js";\n', "", "import NameAddrHeader");
  s = replaceOnce(s, 'import { URI } from "../../uri.js";\n', "", "import URI");
  s = replaceOnce(s, "export class SyntaxError ", "class SyntaxError ", "class SyntaxError");
  s = replaceOnce(s, "export const parse = peg$parse;", "", "export parse");

  // Per-call state, declared (let) at grammar level so the hoisted closures see the current call's.
  const state = "input, options, peg$source, peg$startRuleIndex, peg$currPos, peg$savedPos, peg$posDetailsCache";
  s = replaceOnce(
    s,
    "function peg$parse(input, options) {\n    options = options !== undefined ? options : {};\n",
    `function peg$grammar() {\n    let ${state}, peg$maxFailPos, peg$maxFailExpected, peg$silentFails, peg$result;\n`,
    "parse() head",
  );
  s = replaceOnce(s, "    const peg$source = options.grammarSource;\n", "", "peg$source");
  const start = /\n {4}let peg\$startRuleIndex = (\d+);\n/.exec(s);
  if (!start) throw new Error("default start rule: not found in sip.js' generated grammar");
  s = s.replace(start[0], "\n");

  // The block that (re)initialises the state and picks the start rule: moved into the returned parse.
  const reset = new RegExp(
    String.raw`\n( {4}let peg\$currPos = 0;\n[\s\S]*?\n {8}` +
      String.raw`peg\$startRuleIndex = peg\$startRuleIndices\[options\.startRule\];\n {4}\}\n)`,
  ).exec(s);
  if (!reset) throw new Error("per-call state block: not found in sip.js' generated grammar");
  s = s.replace(reset[0], "\n");
  const resetBody = reset[1].replace(/^( {4})(?:let|const) /gm, "$1");

  // The call itself: from filling options.data to the end of peg$parse.
  const call = new RegExp(
    String.raw`\n( {4}options\.data = \{\};.*\n)` +
      String.raw`( {4}function list\(head, tail\) \{\n[\s\S]*?\n {4}\}\n)` +
      String.raw`( {4}peg\$result = peg\$parseRule\(peg\$startRuleIndex\);\n[\s\S]*)\n\}\n`,
  ).exec(s);
  if (!call) throw new Error("parse() tail: not found in sip.js' generated grammar");
  const [, fillData, list, run] = call;
  const parse =
    `${list}    return function peg$parse(input1, options1) {\n` +
    `    input = input1;\n    options = options1 !== undefined ? options1 : {};\n` +
    `    peg$source = options.grammarSource;\n    peg$startRuleIndex = ${start[1]};\n` +
    `${resetBody}${fillData}${run}\n    };\n}\n`;
  return s.replace(call[0], `\n${parse}`);
}

function buildCachedParse(): GrammarParse {
  const file = grammarFile();
  const source = `${rewriteGrammar(fs.readFileSync(file, "utf8"))}\nreturn peg$grammar();\n//# sourceURL=${file}`;
  // Function, not vm: compiled in the caller's realm, so its arrays and errors are the ones sip.js checks
  // with instanceof (a test runner's sandbox is another realm)
  const build = new Function("NameAddrHeader", "URI", source) as (n: typeof NameAddrHeader, u: typeof URI) => PegParse;
  const peg = build(NameAddrHeader, URI);
  let busy = false;
  // sip.js' Grammar.parse, on the grammar built once: the parsed value, or -1 when the input does not match.
  return (input, startRule) => {
    if (busy) return sipJsParse(input, startRule); // a re-entrant call (none in sip.js 0.21) gets its own state
    const options: { startRule: string; data?: unknown } = { startRule };
    busy = true;
    try {
      peg(input, options);
    } catch {
      options.data = -1;
    } finally {
      busy = false;
    }
    return options.data;
  };
}

/** Put the grammar built once behind sip.js' Grammar.parse (idempotent). */
export function useCachedSipGrammar(): GrammarCacheState {
  if (!cachedParse && !failure) {
    try {
      cachedParse = buildCachedParse();
    } catch (err) {
      failure = `sip.js grammar left uncached: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
  if (!cachedParse) return { cached: false, reason: failure ?? "unknown" };
  Grammar.parse = cachedParse;
  return { cached: true };
}

/** sip.js' own Grammar.parse again (benchmarks compare both; tests use it as the reference). */
export function useSipJsGrammar(): void {
  Grammar.parse = sipJsParse;
}

/** The original, rebuild-per-call parse, whatever is installed (the reference in property tests). */
export const freshSipJsParse: GrammarParse = sipJsParse;
