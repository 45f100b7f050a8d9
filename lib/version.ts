import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";

/** The package version, read from the nearest package.json (works from sources and from dist/). */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(repoRoot(), "package.json"), "utf8")) as { version: string }).version;
}

/** The package's root folder (where package.json is), from sources or from dist/. */
export function repoRoot(): string {
  for (let dir = __dirname; dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) return dir;
  }
  return process.cwd();
}
