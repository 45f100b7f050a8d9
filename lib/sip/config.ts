/** Configuration of the sip.js-core backend: who we are, where we listen, whom we lean on. */
import type { Logger } from "../log/logger";
import type { TransportKind } from "./backend";
import { DEFAULT_MAX_TIMERS } from "./udp-reliability";

export interface ListenSpec {
  transport: TransportKind;
  /** Address to bind (127.0.0.1, ::1, 0.0.0.0, ::). */
  host: string;
  /** 0 binds an ephemeral port; the bound one is reported by `SipJsBackend.listeners`. */
  port: number;
  /** Address written into Via and Contact when `host` is a wildcard or behind NAT. */
  advertise?: string;
}

export interface TlsFiles {
  /** PEM certificate chain and private key of this agent. */
  cert: string;
  key: string;
  /** PEM CA bundle used to verify peers; omitted means the system store. */
  ca?: string;
  /** Verify the peer's certificate (default true). */
  rejectUnauthorized?: boolean;
  /**
   * PEM CA bundle for client certificates (mutual TLS): TLS listeners then ask every caller for
   * a certificate and mark the ones that chain to it as verified. Callers without one still connect.
   */
  clientCa?: string;
}

export interface SipCredentials {
  username: string;
  password: string;
  /** Answer only challenges from this realm (default: any realm). */
  realm?: string;
}

/** What one message may cost us; larger ones are refused (513 / 400) before any parser sees them. */
export interface SipLimits {
  /** Largest UDP datagram or stream message, bytes (a TCP peer sending more is disconnected). */
  maxMessageBytes: number;
  /** Most header lines in one message (10,000 Via headers must not reach the parser). */
  maxHeaders: number;
  /**
   * Inbound TCP/TLS connections held at once. At the limit a new one replaces the oldest that has
   * not yet sent a whole SIP message (a flood of idle connections cannot lock peers out); if all
   * have, it is refused.
   */
  maxConnections?: number;
  /** Inbound TCP/TLS connections one source address may hold; more are closed at once. */
  maxConnectionsPerAddress?: number;
  /** A TCP/TLS connection (either direction, TLS handshake included) silent this long is closed, seconds. */
  connectionIdleS?: number;
  /**
   * New INVITEs per second one source address may send (burst of the same size); more are answered
   * 503 with Retry-After statelessly, before sip.js parses them, so a flood costs little. 0: no limit.
   */
  invitesPerSecond?: number;
  /** Addresses exempt from `invitesPerSecond` (proxies relaying many callers; the agent counts those per caller). */
  trustedProxies?: string[];
  /**
   * UDP retransmission timers (our requests', Timer G's) held at once; at the cap new INVITEs get 503
   * statelessly instead of another timer. Refusals of strangers never take one (they are sent once).
   */
  maxRetransmissionTimers?: number;
}

export const DEFAULT_LIMITS: Required<SipLimits> = {
  maxMessageBytes: 65536,
  maxHeaders: 256,
  maxConnections: 512,
  maxConnectionsPerAddress: 32,
  connectionIdleS: 120,
  invitesPerSecond: 0,
  trustedProxies: [],
  maxRetransmissionTimers: DEFAULT_MAX_TIMERS,
};

export interface SipConfig {
  /** Address of record, e.g. sip:dc2@example.net. Its user part is the Contact user too. */
  aor: string;
  displayName?: string;
  listen: ListenSpec[];
  tls?: TlsFiles;
  /** Loose-routing proxy every out-of-dialog request goes through, e.g. sip:127.0.0.1:5070;transport=tcp. */
  outboundProxy?: string;
  /** Registrar URI for REGISTER (e.g. sip:example.net); defaults to the AOR's domain. */
  registrar?: string;
  /** Registration lifetime we ask for, in seconds (default 600). */
  registerExpires?: number;
  credentials?: SipCredentials;
  /** Log every message sent and received (credentials masked). */
  sipTrace?: boolean;
  /** RFC 3261 T1 in ms (default 500): retransmission start and, x64, every transaction give-up timer. */
  timerT1Ms?: number;
  logger?: Logger;
  limits?: SipLimits;
}

/** The Info-Package (RFC 6086) our INFO requests carry, advertised with Recv-Info. */
export const INFO_PACKAGE = "sip-teleport-status";
export const NRDL_CONTENT_TYPE = "application/nrdl+xml";
