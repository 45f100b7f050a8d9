/**
 * Admission of inbound SIP TCP/TLS connections: a total and a per-address limit, and an idle
 * timeout, so idle connections (a flood, or peers that never finish a TLS handshake) cannot use
 * up file descriptors and memory. At the total limit a new connection replaces the oldest one
 * that has not yet delivered a whole SIP message; connections that have (real peers) are never
 * evicted, so a flood of idle connections cannot lock out an agent that is talking.
 */
import type net from "node:net";
import type { Logger } from "../log/logger";
import type { SipLimits } from "./config";
import { hostPort, normalizeAddress } from "./wire";

type ConnectionLimits = Required<Pick<SipLimits, "maxConnections" | "maxConnectionsPerAddress" | "connectionIdleS">>;

interface Inbound {
  socket: net.Socket;
  address: string;
  since: number;
  proven: boolean;
}

/** Refusals are counted and logged at most once a second: a flood must not become a log flood. */
const LOG_EVERY_MS = 1000;

export class InboundConnections {
  private readonly open = new Map<string, Inbound>();
  private readonly perAddress = new Map<string, number>();
  private refused = { perAddress: 0, total: 0, evicted: 0, idle: 0, loggedAt: 0 };

  constructor(
    private readonly limits: ConnectionLimits,
    private readonly logger: Logger,
  ) {}

  get size(): number {
    return this.open.size;
  }

  /** A new inbound socket (raw TCP, before any TLS handshake): keep it, or close it and say why. */
  admit(socket: net.Socket): boolean {
    const address = normalizeAddress(socket.remoteAddress ?? "");
    const key = hostPort(address, socket.remotePort ?? 0);
    if ((this.perAddress.get(address) ?? 0) >= this.limits.maxConnectionsPerAddress) {
      this.refuse(socket, "perAddress");
      return false;
    }
    if (this.open.size >= this.limits.maxConnections) {
      const victim = this.oldestUnproven();
      if (!victim) {
        this.refuse(socket, "total");
        return false;
      }
      this.note("evicted");
      victim.socket.destroy();
      this.forget(hostPort(victim.address, victim.socket.remotePort ?? 0), victim);
    }
    const entry: Inbound = { socket, address, since: Date.now(), proven: false };
    this.open.set(key, entry);
    this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
    socket.setTimeout(this.limits.connectionIdleS * 1000, () => {
      this.note("idle");
      socket.destroy();
    });
    socket.once("close", () => this.forget(key, entry));
    return true;
  }

  /** The peer at `address`:`port` delivered a whole SIP message: it is talking, never evict it. */
  proven(address: string, port: number): void {
    const entry = this.open.get(hostPort(address, port));
    if (entry) entry.proven = true;
  }

  private oldestUnproven(): Inbound | undefined {
    let oldest: Inbound | undefined;
    for (const c of this.open.values()) if (!c.proven && (!oldest || c.since < oldest.since)) oldest = c;
    return oldest;
  }

  private forget(key: string, entry: Inbound): void {
    if (this.open.get(key) !== entry) return;
    this.open.delete(key);
    const n = (this.perAddress.get(entry.address) ?? 1) - 1;
    if (n > 0) this.perAddress.set(entry.address, n);
    else this.perAddress.delete(entry.address);
  }

  private refuse(socket: net.Socket, why: "perAddress" | "total"): void {
    socket.destroy();
    this.note(why);
  }

  private note(what: "perAddress" | "total" | "evicted" | "idle"): void {
    this.refused[what]++;
    const now = Date.now();
    if (now - this.refused.loggedAt < LOG_EVERY_MS) return;
    const { perAddress, total, evicted, idle } = this.refused;
    this.logger.warn("sip connections closed", {
      overAddressLimit: perAddress,
      overTotalLimit: total,
      evictedSilent: evicted,
      idle,
      open: this.open.size,
      limits: this.limits,
    });
    this.refused = { perAddress: 0, total: 0, evicted: 0, idle: 0, loggedAt: now };
  }
}
