/**
 * The SIP backends the test agents can run on. A new backend (drachtio) is one entry in BACKENDS;
 * `SIP_TELEPORT_TEST_BACKEND=<kind>` runs the e2e, security and console suites on it.
 */
import { sipConfigOf, sipOf, type SipOverrides } from "../../agents/wiring";
import { DrachtioWithOwnServer } from "../../lib/sip/drachtio/own-server";
import type { HostConfig } from "../../lib/config/schema";
import type { Logger } from "../../lib/log/logger";
import type { BoundListener, SipBackend } from "../../lib/sip";

/** What the tests use of a backend: the seam, plus the ports it bound (port 0 means ephemeral). */
export interface TestSipBackend extends SipBackend {
  readonly listeners: BoundListener[];
}

type BackendFactory = (cfg: HostConfig, logger: Logger, o: SipOverrides) => TestSipBackend;

const BACKENDS = {
  sipjs: (cfg, logger, o) => sipOf(cfg, logger, o),
  // one drachtio-server per agent, from ../shared/drachtio/bin/drachtio, on the agent's SIP port
  drachtio: (cfg, logger, o) => new DrachtioWithOwnServer(sipConfigOf(cfg, logger, o)),
} satisfies Record<string, BackendFactory>;

export type BackendKind = keyof typeof BACKENDS;

/** The backend a test run uses: SIP_TELEPORT_TEST_BACKEND, sip.js by default. */
export function defaultBackend(): BackendKind {
  return pick(BACKENDS, process.env.SIP_TELEPORT_TEST_BACKEND ?? "sipjs", "SIP_TELEPORT_TEST_BACKEND");
}

/** A host's SIP endpoint on the chosen backend, built from its configuration (not started). */
export function sipBackend(
  cfg: HostConfig,
  logger: Logger,
  o: SipOverrides = {},
  kind: BackendKind = defaultBackend(),
): TestSipBackend {
  return BACKENDS[kind](cfg, logger, o);
}

/** `name` as a key of `table`, or an error that lists the valid ones. */
export function pick<T extends object>(table: T, name: string, what: string): keyof T & string {
  if (Object.hasOwn(table, name)) return name as keyof T & string;
  throw new Error(`${what}=${name}: unknown, expected one of ${Object.keys(table).join(", ")}`);
}
