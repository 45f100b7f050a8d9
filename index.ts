/**
 * sip-teleport as a library (`require("sip-teleport")`): the agents, the parts they are built
 * from, the NRDL language and configuration loading. The CLI (`sip-teleport`) uses the same parts.
 */
export { DestinationAgent, type DestinationOptions } from "./agents/destination/agent";
export {
  SourceAgent,
  type MigrateRequest,
  type MigrateSummary,
  type SourceOptions,
  type VmSummary,
} from "./agents/source/agent";
export { hostOf, sipOf } from "./agents/wiring";
export { createSipBackend, SipJsBackend, type SipBackend, type SipConfig } from "./lib/sip";
export { createDriver, type DriverOptions } from "./lib/hypervisor/drivers";
export type { HypervisorDriver, VmDefinition } from "./lib/hypervisor/driver";
export { Host } from "./lib/hypervisor/host";
export { loadInventory, parseInventory } from "./lib/hypervisor/inventory";
export { loadConfig, parseConfig, configProblems } from "./lib/config/load";
export type { HostConfig } from "./lib/config/schema";
export { TeleportError } from "./lib/errors";
export { createLogger, silentLogger, type Logger } from "./lib/log/logger";
export * from "./nrdl";
