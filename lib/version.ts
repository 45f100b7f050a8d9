import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";

/** The package version, read from the nearest package.json (works from sources and from dist/). */
export function packageVersion(): string {
  for (let dir = __dirname; dir !== dirname(dir); dir = dirname(dir)) {
    const file = join(dir, "package.json");
    if (existsSync(file)) return (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
  }
  return "0.0.0";
}
