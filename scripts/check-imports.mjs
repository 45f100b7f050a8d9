// Fails (exit 1) when a module of the TypeScript program imports itself through a chain of imports, or
// when a layer imports one above it (nrdl -> lib -> agents -> bench/test). Run by `npm run lint`.
// Type-only imports count too: a cycle of types is still a layering knot.
import path from "node:path";
import ts from "typescript";

const root = process.cwd();
const configPath = ts.findConfigFile(root, ts.sys.fileExists, "tsconfig.json");
if (!configPath) throw new Error("check-cycles: no tsconfig.json");
const { config } = ts.readConfigFile(configPath, ts.sys.readFile);
const { options, fileNames } = ts.parseJsonConfigFileContent(config, ts.sys, path.dirname(configPath));
const ours = (f) => !f.includes(`${path.sep}node_modules${path.sep}`) && !f.endsWith(".d.ts");

/** file -> the files of ours it imports (import, export from, import(), require). */
const graph = new Map();
for (const file of fileNames.filter(ours)) {
  const { importedFiles } = ts.preProcessFile(ts.sys.readFile(file) ?? "", true, true);
  const deps = new Set();
  for (const { fileName } of importedFiles) {
    const resolved = ts.resolveModuleName(fileName, file, options, ts.sys).resolvedModule?.resolvedFileName;
    if (resolved && ours(resolved)) deps.add(path.resolve(resolved));
  }
  graph.set(path.resolve(file), [...deps]);
}

// Tarjan's strongly connected components: every component of more than one file (or a file
// importing itself) is a cycle.
let index = 0;
const stack = [];
const state = new Map(); // file -> { index, low, onStack }
const cycles = [];
function visit(v) {
  const s = { index, low: index, onStack: true };
  index++;
  state.set(v, s);
  stack.push(v);
  for (const w of graph.get(v) ?? []) {
    const t = state.get(w);
    if (!t) {
      visit(w);
      s.low = Math.min(s.low, state.get(w).low);
    } else if (t.onStack) s.low = Math.min(s.low, t.index);
  }
  if (s.low === s.index) {
    const component = [];
    let w;
    do {
      w = stack.pop();
      state.get(w).onStack = false;
      component.push(w);
    } while (w !== v);
    if (component.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(component);
  }
}
for (const v of graph.keys()) if (!state.has(v)) visit(v);

/** One concrete loop inside a component, for a message a human can act on. */
function loopIn(component) {
  const members = new Set(component);
  const start = component[0];
  const prev = new Map([[start, null]]);
  const queue = [start];
  while (queue.length) {
    const v = queue.shift();
    for (const w of graph.get(v) ?? []) {
      if (w === start) {
        const chain = [];
        for (let x = v; x !== null; x = prev.get(x)) chain.unshift(x);
        return [...chain, start];
      }
      if (members.has(w) && !prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return component;
}

const rel = (f) => path.relative(root, f);
/** Top folder -> its rank; a file may import only its own rank or lower. Unlisted (index.ts) is the top. */
const LAYERS = { nrdl: 0, lib: 1, agents: 2, bench: 3, test: 3 };
const rank = (f) => LAYERS[rel(f).split(path.sep)[0]] ?? Infinity;
const upward = [];
for (const [file, deps] of graph) {
  for (const dep of deps) if (rank(dep) > rank(file)) upward.push(`${rel(file)} imports ${rel(dep)} (a layer above)`);
}

for (const c of cycles) console.error(`import cycle: ${loopIn(c).map(rel).join(" -> ")}`);
for (const u of upward) console.error(`layering: ${u}`);
if (cycles.length || upward.length) {
  console.error(
    `check-imports: ${cycles.length} import cycle(s), ${upward.length} upward import(s) in ${graph.size} files`,
  );
  process.exit(1);
}
console.log(`check-imports: no import cycles, no upward imports in ${graph.size} files`);
