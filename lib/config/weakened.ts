/** Settings of this host's SIP door that weaken a default, named by `config check` (agents/commands/config.ts). */
import { BlockList, isIP } from "node:net";
import type { HostConfig } from "./schema";
import { DEFAULT_MAX_TIMERS } from "../sip/udp-reliability";

export function weakenedDoorSettings(cfg: HostConfig): string[] {
  const out: string[] = [...localTrustWarnings(cfg), ...digestWarnings(cfg)];
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

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK.addAddress("::1", "ipv6");

/** An address entry (IP or prefix) that covers a loopback address: every local account can send from it. */
function coversLoopback(entry: string): boolean {
  const [addr, prefix] = entry.split("/");
  const family = isIP(addr);
  if (!family) return false;
  const type = family === 6 ? "ipv6" : "ipv4";
  if (prefix === undefined) return LOOPBACK.check(addr, type);
  const wide = new BlockList();
  wide.addSubnet(addr, Number(prefix), type);
  return type === "ipv4" ? wide.check("127.0.0.1", "ipv4") : wide.check("::1", "ipv6");
}

/** Trust given to loopback, which proves nothing on a host with other accounts (the normal case for a hypervisor). */
function localTrustWarnings(cfg: HostConfig): string[] {
  const allowed = cfg.security.allow.filter(coversLoopback);
  const proxies = cfg.limits.trustedProxies.filter(coversLoopback);
  return [
    ...(allowed.length
      ? [
          `security.allow admits ${allowed.join(", ")}: every local account on this host can arm, receive and ` +
            "inject VMs (prove callers with digest, a client certificate or a trusted proxy instead)",
        ]
      : []),
    ...(proxies.length
      ? [
          `limits.trustedProxies trusts ${proxies.join(", ")}: every local account can assert any ` +
            "P-Asserted-Identity (run the proxy on an address of its own, or use digest between the agents)",
        ]
      : []),
  ];
}

/** Digest weaker than its defaults (SHA-256 only, qop=auth required), for a legacy peer. */
function digestWarnings(cfg: HostConfig): string[] {
  const { digestAlgorithms, allowLegacyDigest } = cfg.security;
  return [
    ...(digestAlgorithms.includes("MD5")
      ? ["security.digestAlgorithms includes MD5: a captured challenge and answer can be brute-forced far faster"]
      : []),
    ...(allowLegacyDigest
      ? ["security.allowLegacyDigest is true: digest answers without qop=auth (no client nonce) are accepted"]
      : []),
  ];
}
