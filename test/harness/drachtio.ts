/**
 * The drachtio suites need a drachtio-server binary. Where none can be had (a fresh clone with no
 * ../shared and no way to build one) they are not run, and say so in the test summary
 * (test/reporters/summary.js); under CI=true they run anyway and fail with the same line.
 */
import fs from "node:fs";
import path from "node:path";
import { drachtioBinary, drachtioMissing } from "../../lib/sip/drachtio/server-process";
import { repoRoot } from "../../lib/version";

/** Where suites that did not run leave one JSON line each for the summary reporter. */
export const NOT_RUN_FILE = path.join(repoRoot(), ".cache", "jest", "not-run.jsonl");

/** Why drachtio suites cannot run here; undefined when they can, or must (CI=true). */
export function drachtioUnavailable(): string | undefined {
  if (process.env.CI === "true" || drachtioBinary()) return undefined;
  return drachtioMissing();
}

function noteNotRun(suite: string, why: string): void {
  fs.mkdirSync(path.dirname(NOT_RUN_FILE), { recursive: true });
  const file = path.relative(repoRoot(), expect.getState().testPath ?? "");
  fs.appendFileSync(NOT_RUN_FILE, `${JSON.stringify({ group: "drachtio", file, suite, why })}\n`);
}

/** `describe` for a suite that needs drachtio-server: skipped, and noted, when none is here. */
export function describeDrachtio(name: string, body: () => void): void {
  const why = drachtioUnavailable();
  if (why === undefined) return describe(name, body);
  noteNotRun(name, why);
  describe.skip(name, body);
}

/** The backends a suite can run on here: drachtio only when its server is available (else noted). */
export function runnableBackends<T extends string>(kinds: readonly T[], suite: string): T[] {
  const why = drachtioUnavailable();
  if (why === undefined || !kinds.includes("drachtio" as T)) return [...kinds];
  noteNotRun(`${suite} (drachtio)`, why);
  return kinds.filter((k) => k !== "drachtio");
}

/**
 * One of the e2e suites again, unchanged, with both agents as drachtio-srf apps on drachtio-servers of
 * their own: `load` requires the suite (it registers its tests when loaded). One suite per file keeps
 * each file's time its own.
 */
export function onDrachtio(suite: string, load: () => void): void {
  process.env.SIP_TELEPORT_TEST_BACKEND = "drachtio";
  if (drachtioUnavailable() === undefined) load();
  else describeDrachtio(`${suite} on drachtio`, () => test("needs a drachtio-server", () => undefined));
}
