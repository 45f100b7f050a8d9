/**
 * Printed after jest's own summary: the suites that did not run here and why (one line per group, with
 * the command that fixes it), and the ten slowest test files, so a suite that grows shows where.
 */
/* eslint-disable @typescript-eslint/no-require-imports -- jest loads a reporter as CommonJS */
const fs = require("node:fs");
const path = require("node:path");

const NOT_RUN_FILE = path.join(__dirname, "..", "..", ".cache", "jest", "not-run.jsonl");

class SummaryReporter {
  onRunStart() {
    fs.rmSync(NOT_RUN_FILE, { force: true });
  }

  onRunComplete(_contexts, results) {
    const out = [];
    const notRun = fs.existsSync(NOT_RUN_FILE)
      ? fs
          .readFileSync(NOT_RUN_FILE, "utf8")
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l))
      : [];
    const groups = new Map();
    for (const n of notRun) groups.set(n.group, [...(groups.get(n.group) ?? []), n]);
    for (const [group, entries] of groups) {
      const files = [...new Set(entries.map((e) => e.file))];
      out.push(`NOT RUN: ${group} suites in ${files.length} files (${files.join(", ")}): ${entries[0].why}`);
    }
    const timed = results.testResults
      .filter((r) => !r.skipped)
      .map((r) => ({
        file: path.relative(process.cwd(), r.testFilePath),
        s: (r.perfStats.end - r.perfStats.start) / 1000,
      }))
      .sort((a, b) => b.s - a.s)
      .slice(0, 10);
    if (timed.length > 1) {
      out.push("Slowest test files:");
      for (const t of timed) out.push(`  ${t.s.toFixed(1).padStart(6)} s  ${t.file}`);
    }
    // jest's own summary reporter always comes last: print just after it, at the very end of the run
    if (out.length) setTimeout(() => process.stderr.write(`\n${out.join("\n")}\n`), 0);
  }
}

module.exports = SummaryReporter;
