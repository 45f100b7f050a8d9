/**
 * SipBackend on the sip.js core (UserAgentCore) and our Node transports: the user agent's wiring.
 * The core does transactions, dialogs and digest; this file builds it, feeds it what the transport
 * receives (OPTIONS to uas.ts statelessly) and hands each job to its part in `sipjs/`:
 * UAC requests (uac.ts), UAS requests (uas.ts), dialogs (dialog.ts), REGISTER refresh
 * (registration.ts) and digest retries (digest-client.ts).
 */
import crypto from "node:crypto";
import { Core, type URI } from "sip.js";
import { TeleportError } from "../errors";
import { silentLogger, type Logger } from "../log/logger";
import type {
  OutgoingInvite,
  Peer,
  OutgoingInviteOptions,
  ResponseInfo,
  SipBackend,
  SipBody,
  SipHandlers,
  TraceEvent,
} from "./backend";
import type { SipConfig } from "./config";
import { useCachedSipGrammar } from "./grammar-cache";
import type { UserAgentContext } from "./sipjs/context";
import { RealmDigest } from "./sipjs/digest-client";
import { looseRoute, parseUri, type PeerMap } from "./sipjs/messages";
import { Registration } from "./sipjs/registration";
import { sendInvite, sendMessage, sendOptions, sendQuery } from "./sipjs/uac";
import { IndexedServers } from "./sipjs/server-index";
import { useT1 } from "./sipjs/timers";
import { receiveInvite, receiveMessage, receiveOptions, refusedStatelessly } from "./sipjs/uas";
import { DEFAULT_TIMERS } from "./udp-reliability";
import { NodeTransport, PLACEHOLDER_HOST, type BoundListener, type TransportOptions } from "./transport";

export class SipJsBackend implements SipBackend {
  readonly aor: string;
  private readonly aorUri: URI;
  private readonly logger: Logger;
  private readonly transport: NodeTransport;
  private core?: Core.UserAgentCore;
  private servers = new IndexedServers<Core.UserAgentServer>();
  /** RFC 3261 T1 for this agent: our UDP retransmissions and sip.js' timers alike. */
  private readonly t1: number;
  private handlers: SipHandlers = {};
  private readonly peers: PeerMap = new WeakMap();
  /** What the UAC, UAS and registration parts see of this user agent. */
  private readonly ua: UserAgentContext;
  private readonly registration: Registration;

  constructor(
    private readonly config: SipConfig,
    transportOverrides: Partial<TransportOptions> = {},
  ) {
    this.aor = config.aor;
    this.aorUri = parseUri(config.aor);
    this.logger = config.logger ?? silentLogger;
    this.t1 = config.timerT1Ms ?? DEFAULT_TIMERS.t1;
    this.transport = new NodeTransport({
      timers: { ...DEFAULT_TIMERS, t1: this.t1 },
      listen: config.listen,
      tls: config.tls,
      logger: this.logger,
      sipTrace: config.sipTrace ?? false,
      limits: config.limits,
      ...transportOverrides,
    });
    this.ua = {
      aorUri: this.aorUri,
      config,
      logger: this.logger,
      peers: this.peers,
      dialogs: new Map(),
      handlers: () => this.handlers,
      requireCore: () => this.requireCore(),
      contactHeader: () => this.contactHeader(),
      sendError: (callId) => this.transport.sendError(callId),
      replyStateless: (message, options) => this.replyStateless(message, options),
    };
    this.registration = new Registration(this.ua);
  }

  onTrace(handler: (e: TraceEvent) => void): () => void {
    this.transport.tracers.add(handler);
    return () => this.transport.tracers.delete(handler);
  }

  /** Where we listen, with the ports actually bound (port 0 in the config means ephemeral). */
  get listeners(): BoundListener[] {
    return this.transport.bound;
  }

  /** Inbound TCP/TLS connections held now (bounded by limits.maxConnections). */
  get inboundConnections(): number {
    return this.transport.inboundConnections;
  }

  /** UDP retransmission timers running now (bounded by limits.maxRetransmissionTimers). */
  get retransmissionTimers(): number {
    return this.transport.retransmissionTimers;
  }

  /** Our Contact URI for one of the listeners, e.g. to put into a peer's configuration. */
  contactFor(transport: BoundListener["transport"]): string {
    const l = this.listeners.find((x) => x.transport === transport);
    if (!l) throw new TeleportError(500, `no ${transport} listener`);
    const host = l.advertise.includes(":") ? `[${l.advertise}]` : l.advertise;
    return `sip:${this.aorUri.user ?? ""}@${host}:${l.port}${transport === "udp" ? "" : `;transport=${transport}`}`;
  }

  setHandlers(handlers: SipHandlers): void {
    this.handlers = handlers;
  }

  async start(): Promise<void> {
    useT1(this.t1);
    const grammar = useCachedSipGrammar(); // sip.js rebuilds its grammar per parse otherwise (grammar-cache.ts)
    if (!grammar.cached) this.logger.warn(grammar.reason);
    await this.transport.start();
    const loggerFactory = new Core.LoggerFactory();
    loggerFactory.builtinEnabled = false;
    loggerFactory.connector = (level, category, _label, content) =>
      this.logger.debug(`sip.js ${category}: ${String(content)}`, { level });
    const contactUri = parseUri(`sip:${this.aorUri.user ?? "teleport"}@${PLACEHOLDER_HOST}`);
    const credentials = this.config.credentials;
    this.core = new Core.UserAgentCore(
      {
        aor: this.aorUri,
        contact: {
          pubGruu: undefined,
          tempGruu: undefined,
          uri: contactUri,
          toString: () => `<${contactUri.toString()}>`,
        },
        displayName: this.config.displayName ?? "",
        loggerFactory,
        hackViaTcp: false,
        routeSet: this.config.outboundProxy ? [`<${looseRoute(this.config.outboundProxy)}>`] : [],
        sipjsId: crypto.randomBytes(3).toString("hex"),
        supportedOptionTags: [],
        supportedOptionTagsResponse: [],
        userAgentHeaderFieldValue: "sip-teleport",
        viaForceRport: true,
        viaHost: PLACEHOLDER_HOST,
        authenticationFactory: () =>
          credentials
            ? new RealmDigest(loggerFactory, credentials.username, credentials.password, credentials.realm)
            : undefined,
        transportAccessor: () => this.transport,
      },
      {
        onInvite: (req) => receiveInvite(this.ua, req),
        onMessage: (req) => receiveMessage(this.ua, req),
      },
    );
    this.servers = new IndexedServers<Core.UserAgentServer>();
    this.core.userAgentServers = this.servers; // indexed: the core's merged-request check (server-index.ts)
    this.transport.onMessage = (text, source) => this.receive(text, source);
  }

  async stop(): Promise<void> {
    this.registration.stop();
    this.core?.dispose();
    this.core = undefined;
    await this.transport.stop();
  }

  invite(target: string, body: SipBody, opts: OutgoingInviteOptions = {}): OutgoingInvite {
    return sendInvite(this.ua, target, body, opts);
  }

  message(target: string, body: SipBody): Promise<ResponseInfo> {
    return sendMessage(this.ua, target, body);
  }

  /** Sends OPTIONS (a health check of a peer or proxy); resolves with its 200. */
  options(target: string): Promise<ResponseInfo> {
    return sendOptions(this.ua, target);
  }

  query(target: string, body?: SipBody): Promise<ResponseInfo> {
    return sendQuery(this.ua, target, body);
  }

  register(): Promise<void> {
    return this.registration.register();
  }

  unregister(): Promise<void> {
    return this.registration.unregister();
  }

  private contactHeader(): string {
    return `<sip:${this.aorUri.user ?? "teleport"}@${PLACEHOLDER_HOST}>`;
  }

  /** As the core's replyStateless, but written straight to the transport: sent once, never retransmitted. */
  private replyStateless(message: Core.IncomingRequestMessage, options: Core.ResponseOptions): void {
    const core = this.requireCore();
    const response = Core.constructOutgoingResponse(message, {
      ...options,
      userAgent: core.configuration.userAgentHeaderFieldValue,
      supported: [],
    });
    this.transport
      .sendStateless(response.message)
      .catch((err: unknown) => this.logger.debug("stateless reply not sent", { error: String(err) }));
  }

  private requireCore(): Core.UserAgentCore {
    if (!this.core) throw new TeleportError(500, "SIP backend not started");
    return this.core;
  }

  /**
   * Whether the agent vets `message` before the core: in-dialog INFO, BYE (not ACK, CANCEL), and a
   * new INVITE or MESSAGE that no server transaction holds yet (a retransmission belongs to its own).
   */
  private vetted(message: Core.IncomingRequestMessage): boolean {
    if (message.toTag) return message.method !== "ACK" && message.method !== "CANCEL";
    return (message.method === "INVITE" || message.method === "MESSAGE") && !this.servers.has(message.viaBranch);
  }

  /** From the transport: parse once, answer OPTIONS ourselves, hand the rest to the core. */
  private receive(text: string, source: Peer): void {
    const core = this.core;
    if (!core) return;
    const message = Core.Parser.parseMessage(text, core.loggerFactory.getLogger("sip.parser"));
    if (!message) return void this.transport.refuse(text, source, 400, "Bad Request", "unparsable SIP message");
    // One bad message (or a throwing handler) must not take the agent and its other dialogs down.
    try {
      if (message instanceof Core.IncomingResponseMessage) {
        // a 200 OK's source proves the dialog's later requests (access/source-in-dialog.ts)
        this.peers.set(message, source);
        core.receiveIncomingResponseFromTransport(message);
        return;
      }
      // The core trusts these to exist; a request without them is answered 400 here when it can be.
      const missing = (["from", "to", "callId", "cseq", "via"] as const).filter((k) => !message[k]);
      if (missing.length)
        return void this.transport.refuse(
          text,
          source,
          400,
          "Bad Request",
          `missing or unparsable ${missing.join(", ")}`,
        );
      this.peers.set(message, source);
      if (message.method === "OPTIONS" && !message.toTag) {
        // Health check: advertise what we accept; the core's own answer would list SDP.
        return receiveOptions(this.ua, core, message);
      }
      if (this.vetted(message) && refusedStatelessly(this.ua, message)) return;
      this.servers.focus(message, () => core.receiveIncomingRequestFromTransport(message));
    } catch (err) {
      this.logger.warn("sip message processing failed", {
        from: `${source.address}:${source.port}`,
        error: String(err),
      });
    }
  }
}
