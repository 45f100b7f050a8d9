import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import { TeleportError } from "../errors";
import { configSchema, type HostConfig } from "./schema";

/** Every problem in a config, one line each, with the path of the offending field. */
export function configProblems(raw: unknown): string[] {
  const parsed = configSchema.safeParse(raw);
  if (parsed.success) return [];
  return parsed.error.issues.map((i) => `${i.path.length ? i.path.join(".") : "(top level)"}: ${i.message}`);
}

/** Parse a config object; relative paths are taken relative to `baseDir`. */
export function parseConfig(raw: unknown, baseDir = process.cwd()): HostConfig {
  const parsed = configSchema.safeParse(raw ?? {});
  if (!parsed.success) throw new TeleportError(500, "invalid configuration", configProblems(raw));
  const cfg = parsed.data;
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  cfg.runDir = abs(cfg.runDir);
  cfg.stateDir = abs(cfg.stateDir);
  if (typeof cfg.inventory === "string") cfg.inventory = abs(cfg.inventory);
  if (cfg.sip.tls)
    cfg.sip.tls = {
      ...cfg.sip.tls,
      cert: abs(cfg.sip.tls.cert),
      key: abs(cfg.sip.tls.key),
      ca: cfg.sip.tls.ca && abs(cfg.sip.tls.ca),
      clientCa: cfg.sip.tls.clientCa && [cfg.sip.tls.clientCa].flat().map(abs),
    };
  return cfg;
}

/** Load a config file (or the defaults when no file is given). */
export function loadConfig(file?: string): HostConfig {
  if (!file) return parseConfig({});
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new TeleportError(500, `cannot read configuration ${file}`, [(err as Error).message]);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new TeleportError(500, `configuration ${file} is not valid JSON`, [(err as Error).message]);
  }
  return parseConfig(raw, dirname(resolve(file)));
}
