/** Settings of this host's SIP door that weaken a default, named by `config check` (agents/commands/config.ts). */
import type { HostConfig } from "./schema";
import { DEFAULT_MAX_TIMERS } from "../sip/udp-reliability";

export function weakenedDoorSettings(cfg: HostConfig): string[] {
  const out: string[] = [];
  if (cfg.limits.maxRetransmissionTimers > DEFAULT_MAX_TIMERS)
    out.push(
      `limits.maxRetransmissionTimers ${cfg.limits.maxRetransmissionTimers} is above the default ` +
        `${DEFAULT_MAX_TIMERS}: a UDP flood of admitted callers may hold that many timers before INVITEs get 503`,
    );
  if (!cfg.security.digestInDialog && Object.keys(cfg.security.users).length > 0)
    out.push(
      "security.digestInDialog false: INFO and BYE of a password-admitted dialog are not challenged, " +
        "only held to the INVITE's address",
    );
  return out;
}
