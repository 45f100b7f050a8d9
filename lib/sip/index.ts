/** The SIP layer's entry point: agents build a backend from configuration and use the seam. */
import type { TransportOptions } from "./transport";
import type { SipConfig } from "./config";
import { SipJsBackend } from "./sipjs-backend";

export * from "./backend";
export * from "./config";
export { SipJsBackend } from "./sipjs-backend";
export type { BoundListener } from "./transport";

export function createSipBackend(config: SipConfig, transportOverrides?: Partial<TransportOptions>): SipJsBackend {
  return new SipJsBackend(config, transportOverrides);
}
