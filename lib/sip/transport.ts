/**
 * Node transports for the sip.js core: UDP, TCP and TLS listeners behind the one `send(text)`
 * the core knows. It routes each message itself (requests: top Route, else Request-URI;
 * responses: top Via received/rport, on the connection the request came in on), writes our
 * real address into the Via and Contact the core leaves as a placeholder, stamps
 * received/rport on incoming requests, and adds UDP retransmissions. A refusal made before any
 * transaction exists goes out through `sendStateless`: once, no Timer G, no cached answer
 * (RFC 3261 8.2, 17.2.1), so a spoofed source cannot make the agent a reflector.
 */
import dgram from "node:dgram";
import dns from "node:dns/promises";
import net from "node:net";
import tls from "node:tls";
import os from "node:os";
import { Grammar } from "sip.js";
import { TeleportError } from "../errors";
import { maskSecrets, type Logger } from "../log/logger";
import type { Peer, TraceEvent, TransportKind } from "./backend";
import { DEFAULT_LIMITS, type ListenSpec, type SipLimits, type TlsFiles } from "./config";
import { InboundConnections } from "./connection-limits";
import { InviteFloodGuard } from "./rate";
import { serverTlsOptions, verifiedCertificate } from "./peer-certificate";
import { UdpReliability, type ReliabilityTimers, DEFAULT_TIMERS } from "./udp-reliability";
import {
  StreamFramer,
  cseqMethod,
  firstHeader,
  headOf,
  headerCount,
  hostPort,
  isRequest,
  normalizeAddress,
  rawResponse,
  stampVia,
  statusOf,
  topValue,
  topVia,
  trimDatagram,
  unbracket,
} from "./wire";

/** The host the core writes into Via and Contact; replaced here by the listener actually used. */
export const PLACEHOLDER_HOST = "teleport.invalid";

export interface BoundListener {
  transport: TransportKind;
  host: string;
  port: number;
  /** What goes into Via/Contact. */
  advertise: string;
}

interface Listener extends BoundListener {
  family: 4 | 6;
  udp?: dgram.Socket;
  server?: net.Server;
}

type StreamSocket = net.Socket | tls.TLSSocket;

export interface TransportOptions {
  listen: ListenSpec[];
  tls?: TlsFiles;
  logger: Logger;
  sipTrace: boolean;
  timers?: ReliabilityTimers;
  limits?: SipLimits;
  /** Tests only: turn off UDP retransmission and the response cache to measure their effect. */
  unreliable?: boolean;
}

export type MessageHandler = (text: string, source: Peer) => void;

export class NodeTransport {
  /** Read by the core for its Via; we rewrite the Via per message anyway. */
  readonly protocol = "UDP";
  onMessage: MessageHandler = () => undefined;
  /** Observers of every message sent and received (masked text). */
  readonly tracers = new Set<(e: TraceEvent) => void>();
  private readonly listeners: Listener[] = [];
  private readonly connections = new Map<string, StreamSocket>();
  private readonly sendErrors = new Map<string, string>();
  private readonly reliability: UdpReliability;
  private readonly limits: Required<SipLimits>;
  private readonly inbound: InboundConnections;
  private readonly inviteFlood: InviteFloodGuard;
  private saturatedLoggedAt = 0;

  constructor(private readonly opts: TransportOptions) {
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.reliability = new UdpReliability(opts.timers ?? DEFAULT_TIMERS, this.limits.maxRetransmissionTimers);
    this.inbound = new InboundConnections(this.limits, opts.logger);
    this.inviteFlood = new InviteFloodGuard(this.limits, opts.logger);
  }

  /** Inbound TCP/TLS connections held now (bounded by limits.maxConnections). */
  get inboundConnections(): number {
    return this.inbound.size;
  }

  /** UDP retransmission timers running now (bounded by limits.maxRetransmissionTimers). */
  get retransmissionTimers(): number {
    return this.reliability.live;
  }

  get bound(): BoundListener[] {
    return this.listeners.map(({ transport, host, port, advertise }) => ({ transport, host, port, advertise }));
  }

  async start(): Promise<void> {
    for (const spec of this.opts.listen) this.listeners.push(await this.listen(spec));
  }

  async stop(): Promise<void> {
    this.reliability.stop();
    for (const s of this.connections.values()) s.destroy();
    this.connections.clear();
    await Promise.all(
      this.listeners.map(
        (l) =>
          new Promise<void>((resolve) => {
            if (l.udp) l.udp.close(() => resolve());
            else if (l.server) l.server.close(() => resolve());
            else resolve();
          }),
      ),
    );
    this.listeners.length = 0;
  }

  /** The core's entry point: route and send one message. */
  async send(message: string): Promise<void> {
    const head = headOf(message);
    try {
      if (isRequest(message)) await this.sendRequest(message, head);
      else await this.sendResponse(message, head);
    } catch (err) {
      // The core turns this into a bare internal 503: keep the cause for the caller's error.
      const callId = firstHeader(head, "call-id");
      if (callId !== undefined) {
        this.sendErrors.set(callId, TeleportError.from(err).message);
        if (this.sendErrors.size > 256) this.sendErrors.delete(this.sendErrors.keys().next().value as string);
      }
      throw err;
    }
  }

  /** A response written once, with no retransmission and no cached copy (a stateless UAS's answer). */
  async sendStateless(response: string): Promise<void> {
    await this.sendResponse(response, headOf(response), true);
  }

  /** Why the last message of this Call-ID could not be sent (TLS verification, refused connection...). */
  sendError(callId: string): string | undefined {
    return this.sendErrors.get(callId);
  }

  private async sendRequest(message: string, head: string): Promise<void> {
    const route = topValue(head, "route");
    const target = route ?? message.slice(message.indexOf(" ") + 1, message.indexOf(" SIP/2.0"));
    const dest = await this.resolveUri(target);
    const listener = this.listenerFor(dest.transport, dest.family);
    const text = this.fillPlaceholder(message, listener, true);
    const branch = topVia(head)?.branch ?? "";
    const method = message.slice(0, message.indexOf(" "));
    await this.write(listener, dest.address, dest.port, text, dest.name);
    if (listener.transport === "udp" && !this.opts.unreliable) {
      this.reliability.requestSent(branch, method, () => this.rewrite(listener, dest.address, dest.port, text));
    }
  }

  private async sendResponse(message: string, head: string, stateless = false): Promise<void> {
    const via = topVia(head);
    if (!via) throw new TeleportError(500, "response without Via");
    const transport = via.protocol.toLowerCase() as TransportKind;
    const address = unbracket(via.received ?? via.host);
    const port = via.rport ? Number(via.rport) : (via.port ?? (transport === "tls" ? 5061 : 5060));
    const family = net.isIPv6(address) ? 6 : 4;
    const listener = this.listenerFor(transport, family);
    const text = this.fillPlaceholder(message, listener, false);
    await this.write(listener, address, port, text);
    if (listener.transport === "udp" && !this.opts.unreliable && !stateless) {
      this.reliability.responseSent(via.branch ?? "", cseqMethod(head), statusOf(message), () =>
        this.rewrite(listener, address, port, text),
      );
    }
  }

  /** Retransmissions: failures are logged, the core's own timers report the outcome. */
  private rewrite(listener: Listener, address: string, port: number, text: string): void {
    this.write(listener, address, port, text).catch((err: unknown) =>
      this.opts.logger.debug("sip retransmission failed", { error: String(err) }),
    );
  }

  /** `name`: the host name the URI gave, checked against the peer's TLS certificate. */
  private async write(listener: Listener, address: string, port: number, text: string, name?: string): Promise<void> {
    this.trace("sent", { address, port, transport: listener.transport }, text);
    if (listener.udp) {
      const udp = listener.udp;
      await new Promise<void>((resolve, reject) =>
        udp.send(text, port, address, (err) => (err ? reject(err) : resolve())),
      );
      return;
    }
    const socket = await this.connection(listener.transport, address, port, name);
    await new Promise<void>((resolve, reject) => socket.write(text, (err) => (err ? reject(err) : resolve())));
  }

  private fillPlaceholder(message: string, listener: Listener, request: boolean): string {
    const end = message.indexOf("\r\n\r\n");
    let head = end < 0 ? message : message.slice(0, end);
    const sentBy = hostPort(listener.advertise, listener.port);
    if (request) {
      head = head.replace(
        new RegExp(`^((?:Via|v)[ \\t]*:[ \\t]*SIP/2\\.0/)\\w+ ${PLACEHOLDER_HOST}`, "im"),
        `$1${listener.transport.toUpperCase()} ${sentBy}`,
      );
    }
    const transportParam = listener.transport === "udp" ? "" : `;transport=${listener.transport}`;
    head = head.replace(
      new RegExp(`@${PLACEHOLDER_HOST.replace(".", "\\.")}(?=[;>])`, "g"),
      `@${sentBy}${transportParam}`,
    );
    return end < 0 ? head : head + message.slice(end);
  }

  private listenerFor(transport: TransportKind, family: 4 | 6): Listener {
    const l =
      this.listeners.find((x) => x.transport === transport && x.family === family) ??
      (family === 4 ? undefined : this.listeners.find((x) => x.transport === transport && x.host === "::"));
    if (!l) throw new TeleportError(503, `no ${transport.toUpperCase()} IPv${family} listener configured`);
    return l;
  }

  private async resolveUri(
    target: string,
  ): Promise<{ address: string; name: string; port: number; transport: TransportKind; family: 4 | 6 }> {
    const bare = target.includes("<") ? target.slice(target.indexOf("<") + 1, target.indexOf(">")) : target;
    const uri = Grammar.URIParse(bare);
    if (!uri) throw new TeleportError(400, `cannot parse SIP URI ${bare}`);
    const param = uri.getParam("transport");
    const transport = (typeof param === "string" ? param.toLowerCase() : this.defaultTransport()) as TransportKind;
    if (!["udp", "tcp", "tls"].includes(transport)) throw new TeleportError(400, `unsupported transport ${transport}`);
    const host = unbracket(uri.host);
    const address = net.isIP(host) ? host : await this.lookup(host, transport);
    const port = uri.port ?? (transport === "tls" ? 5061 : 5060);
    return { address, name: host, port, transport, family: net.isIPv6(address) ? 6 : 4 };
  }

  /** A host name's first address in a family we have a listener for (localhost may say ::1 first). */
  private async lookup(host: string, transport: TransportKind): Promise<string> {
    const families = new Set(this.listeners.filter((l) => l.transport === transport).map((l) => l.family));
    const found = await dns.lookup(host, { all: true }).catch(() => []);
    const usable = found.find((a) => families.has(a.family === 6 ? 6 : 4));
    if (!usable)
      throw new TeleportError(503, `cannot resolve ${host} to an address we can reach over ${transport.toUpperCase()}`);
    return usable.address;
  }

  private defaultTransport(): TransportKind {
    return this.listeners.some((l) => l.transport === "udp") ? "udp" : (this.listeners[0]?.transport ?? "udp");
  }

  /** Reuse an open connection to the peer (including one it opened to us), else open one. */
  private async connection(kind: TransportKind, address: string, port: number, name = address): Promise<StreamSocket> {
    const key = `${kind} ${hostPort(address, port)}`;
    const open = this.connections.get(key);
    if (open && !open.destroyed) return open;
    const socket = await new Promise<StreamSocket>((resolve, reject) => {
      const s =
        kind === "tls"
          ? tls.connect({
              host: address,
              port,
              cert: this.opts.tls?.cert,
              key: this.opts.tls?.key,
              ca: this.opts.tls?.ca,
              rejectUnauthorized: this.opts.tls?.rejectUnauthorized ?? true,
              servername: net.isIP(name) ? undefined : name,
            })
          : net.connect({ host: address, port });
      s.once(kind === "tls" ? "secureConnect" : "connect", () => resolve(s));
      s.once("error", (err) =>
        reject(
          new TeleportError(
            503,
            `cannot connect over ${kind.toUpperCase()} to ${hostPort(address, port)}: ${err.message}`,
          ),
        ),
      );
    });
    this.adopt(kind, socket, key);
    return socket;
  }

  private adopt(kind: TransportKind, socket: StreamSocket, key: string): void {
    this.connections.set(key, socket);
    socket.setNoDelay(true);
    // idle outbound connections close too (inbound ones have their timer from admission)
    if (!socket.listenerCount("timeout")) socket.setTimeout(this.limits.connectionIdleS * 1000, () => socket.destroy());
    const framer = new StreamFramer(this.limits.maxMessageBytes);
    const source: Peer = {
      address: normalizeAddress(socket.remoteAddress ?? ""),
      port: socket.remotePort ?? 0,
      transport: kind,
      certificate: socket instanceof tls.TLSSocket ? verifiedCertificate(socket) : undefined,
    };
    socket.on("data", (chunk: Buffer) => {
      if (framer.failed) return;
      let messages: string[];
      try {
        messages = framer.push(chunk);
      } catch (err) {
        // Answer 513 if the start of the oversized message says where to, then hang up.
        void this.refuse(
          framer.pending(),
          source,
          513,
          "Message Too Large",
          `${(err as Error).message}; connection closed`,
        ).finally(() => socket.destroy());
        return;
      }
      if (messages.length) this.inbound.proven(source.address, source.port);
      for (const m of messages) this.receive(m, source);
    });
    socket.on("error", (err) => this.opts.logger.debug("sip connection error", { peer: key, error: err.message }));
    socket.on("close", () => {
      if (this.connections.get(key) === socket) this.connections.delete(key);
    });
  }

  /**
   * Refuse a message no parser should see: log why and answer the request statelessly when it
   * carries enough to address a response (otherwise it is only dropped).
   */
  async refuse(text: string, source: Peer, status: number, reason: string, detail: string): Promise<void> {
    this.opts.logger.warn("sip message refused", {
      from: hostPort(source.address, source.port),
      transport: source.transport,
      status,
      detail,
    });
    if (!isRequest(text)) return;
    const response = rawResponse(
      stampVia(text, source.address, source.port, source.transport !== "udp"),
      status,
      reason,
    );
    if (response)
      await this.sendStateless(response).catch((err: unknown) =>
        this.opts.logger.debug("sip refusal not sent", { error: String(err) }),
      );
  }

  private receive(text: string, source: Peer): void {
    if (text.length > this.limits.maxMessageBytes) {
      return void this.refuse(
        text.slice(0, 65536),
        source,
        513,
        "Message Too Large",
        `${text.length} bytes, limit ${this.limits.maxMessageBytes}`,
      );
    }
    const headers = headerCount(headOf(text));
    if (headers > this.limits.maxHeaders)
      return void this.refuse(
        text,
        source,
        400,
        "Too Many Headers",
        `${headers} header lines, limit ${this.limits.maxHeaders}`,
      );
    this.trace("received", source, text);
    if (isRequest(text)) {
      const stream = source.transport !== "udp";
      // Stream peers always get rport so the response finds this very connection.
      const stamped = stampVia(text, source.address, source.port, stream);
      if (!stream && !this.opts.unreliable) {
        const method = text.slice(0, text.indexOf(" "));
        if (this.reliability.requestReceived(topVia(headOf(stamped))?.branch ?? "", method)) return;
      }
      if (this.refusedNewInvite(stamped, source)) return;
      this.onMessage(stamped, source);
    } else {
      if (source.transport === "udp" && !this.opts.unreliable) {
        const head = headOf(text);
        this.reliability.responseReceived(topVia(head)?.branch ?? "", cseqMethod(head), statusOf(text));
      }
      this.onMessage(text, source);
    }
  }

  /**
   * A new INVITE the stack will not take, answered 503 with Retry-After statelessly and before sip.js
   * parses it (a flood must cost little): over `invitesPerSecond` from its address (logged as one
   * summary a second), or while the UDP retransmission timers are at their cap.
   */
  private refusedNewInvite(text: string, source: Peer): boolean {
    if (!text.startsWith("INVITE ")) return false;
    if (/;\s*tag=/i.test(firstHeader(headOf(text), "to") ?? "")) return false; // in-dialog re-INVITE
    const refusal =
      this.inviteFlood.refuse(source.address) ??
      (source.transport === "udp" && this.reliability.saturated ? this.saturatedRefusal() : undefined);
    if (!refusal) return false;
    const response = rawResponse(text, 503, "Service Unavailable");
    const warning = `Warning: 399 sip-teleport "${refusal.warning}"`;
    if (response)
      this.sendStateless(
        response.replace(
          "\r\nContent-Length: 0",
          `\r\nRetry-After: ${refusal.retryAfterS}\r\n${warning}\r\nContent-Length: 0`,
        ),
      ).catch((err: unknown) => this.opts.logger.debug("sip refusal not sent", { error: String(err) }));
    return true;
  }

  /** Why an INVITE waits while the timers are at their cap; logged at most once a second. */
  private saturatedRefusal(): { retryAfterS: number; warning: string } {
    const why = `${this.reliability.live} UDP retransmissions pending (limits.maxRetransmissionTimers)`;
    const now = Date.now();
    if (now - this.saturatedLoggedAt >= 1000) {
      this.saturatedLoggedAt = now;
      this.opts.logger.warn("new INVITEs refused: retransmission timers at their cap", {
        pending: this.reliability.live,
      });
    }
    // the oldest timers end within 64 x T1
    const retryAfterS = Math.max(1, Math.ceil((64 * (this.opts.timers ?? DEFAULT_TIMERS).t1) / 1000));
    return { retryAfterS, warning: `Service Unavailable; ${why}` };
  }

  private trace(
    direction: "sent" | "received",
    peer: Omit<Peer, "transport"> & { transport: TransportKind },
    text: string,
  ): void {
    if (!this.opts.sipTrace && this.tracers.size === 0) return;
    const masked = maskSecrets(text);
    if (this.opts.sipTrace)
      this.opts.logger.info(`sip ${direction} ${peer.transport} ${hostPort(peer.address, peer.port)}\n${masked}`);
    const event: TraceEvent = { direction, message: masked, at: Date.now(), peer };
    for (const t of this.tracers) t(event);
  }

  private async listen(spec: ListenSpec): Promise<Listener> {
    const family: 4 | 6 = net.isIPv6(spec.host) ? 6 : 4;
    const advertise = spec.advertise ?? advertisedAddress(spec.host, family);
    if (spec.transport === "udp") {
      const udp = dgram.createSocket({
        type: family === 6 ? "udp6" : "udp4",
        ipv6Only: family === 6 && spec.host !== "::" ? true : undefined,
      });
      await new Promise<void>((resolve, reject) => {
        udp.once("error", reject);
        udp.bind(spec.port, spec.host, () => {
          udp.off("error", reject);
          resolve();
        });
      });
      udp.on("message", (datagram, rinfo) => {
        const source: Peer = { address: normalizeAddress(rinfo.address), port: rinfo.port, transport: "udp" };
        const text = datagram.length > this.limits.maxMessageBytes ? undefined : trimDatagram(datagram);
        if (text !== undefined) return this.receive(text, source);
        const raw = datagram.subarray(0, 65536).toString("utf8");
        if (datagram.length > this.limits.maxMessageBytes)
          void this.refuse(
            raw,
            source,
            513,
            "Message Too Large",
            `${datagram.length} bytes, limit ${this.limits.maxMessageBytes}`,
          );
        else
          void this.refuse(
            raw,
            source,
            400,
            "Bad Request",
            "no header end, or Content-Length larger than the datagram",
          );
      });
      udp.on("error", (err) => this.opts.logger.warn("sip udp socket error", { error: err.message }));
      return { transport: "udp", host: spec.host, port: udp.address().port, advertise, family, udp };
    }
    if (spec.transport === "tls" && !this.opts.tls)
      throw new TeleportError(400, "a TLS listener needs tls.cert and tls.key in the SIP configuration");
    const onConnection = (socket: StreamSocket): void => {
      const key = `${spec.transport} ${hostPort(normalizeAddress(socket.remoteAddress ?? ""), socket.remotePort ?? 0)}`;
      this.adopt(spec.transport, socket, key);
    };
    const server =
      spec.transport === "tls"
        ? tls.createServer(serverTlsOptions(this.opts.tls), onConnection)
        : net.createServer(onConnection);
    // raw TCP, before any TLS handshake: limits and the idle timer apply from the first byte
    server.on("connection", (raw: net.Socket) => this.inbound.admit(raw));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(spec.port, spec.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const port = (server.address() as net.AddressInfo).port;
    return { transport: spec.transport, host: spec.host, port, advertise, family, server };
  }
}

/** A wildcard bind has no single address to advertise: use the first external one, else loopback. */
function advertisedAddress(host: string, family: 4 | 6): string {
  if (host !== "0.0.0.0" && host !== "::") return host;
  for (const addrs of Object.values(os.networkInterfaces())) {
    const a = addrs?.find((x) => !x.internal && x.family === (family === 4 ? "IPv4" : "IPv6"));
    if (a) return a.address;
  }
  return family === 4 ? "127.0.0.1" : "::1";
}
