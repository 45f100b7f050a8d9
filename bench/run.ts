/**
 * `npm run bench NAME`: one entry point for every benchmark (each is also `npm run bench:NAME`).
 * Each benchmark module runs when loaded and prints its own figures.
 */
import fs from "node:fs";
import path from "node:path";

const name = process.argv[2];
const available = fs
  .readdirSync(__dirname)
  .filter((f) => f.endsWith(".js") && !["run.js", "sipp.js"].includes(f))
  .map((f) => f.replace(/\.js$/, ""));
if (!name || !available.includes(name)) {
  process.stderr.write(`usage: npm run bench <name>   (one of: ${available.join(", ")})\n`);
  process.exit(2);
}
void import(path.join(__dirname, name));
