/**
 * SipBackend on the sip.js core (UserAgentCore) and our Node transports. The core does
 * transactions, dialogs and digest; this file maps them onto the drachtio-style seam and
 * adds what the agents need on top: NRDL-only INVITEs (415 otherwise), the Info-Package,
 * OPTIONS health answers, REGISTER refresh and 3xx following.
 */
import crypto from "node:crypto";
import { Core, Grammar, type URI } from "sip.js";
import { TeleportError } from "../errors";
import { silentLogger, type Logger } from "../log/logger";
import type {
  Dialog,
  IncomingRequest,
  InviteResponder,
  OutgoingInvite,
  OutgoingInviteOptions,
  Peer,
  ResponseInfo,
  ResponseOptions,
  Responder,
  SipBackend,
  SipBody,
  SipHandlers,
  TraceEvent,
} from "./backend";
import { INFO_PACKAGE, NRDL_CONTENT_TYPE, type SipConfig } from "./config";
import { useCachedSipGrammar } from "./grammar-cache";
import { NodeTransport, PLACEHOLDER_HOST, type BoundListener, type TransportOptions } from "./transport";

const ALLOW = "INVITE, ACK, CANCEL, BYE, INFO, OPTIONS, MESSAGE";
/** Headers every dialog-forming request and answer carries. */
const CAPABILITIES = [`Allow: ${ALLOW}`, `Accept: ${NRDL_CONTENT_TYPE}`, `Recv-Info: ${INFO_PACKAGE}`];
const MAX_REDIRECTS = 5;

type AnyIncomingResponse = { message: Core.IncomingResponseMessage };

function parseUri(uri: string): URI {
  const parsed = Grammar.URIParse(uri.trim().replace(/^<|>$/g, ""));
  if (!parsed) throw new TeleportError(400, `not a SIP URI: ${uri}`);
  return parsed;
}

/** The outbound proxy as a preloaded Route: it must be a loose router (;lr). */
function looseRoute(proxy: string): string {
  const uri = parseUri(proxy);
  uri.setParam("lr", undefined);
  return uri.toString();
}

function mediaType(contentType: string | undefined): string {
  return (contentType ?? "").split(";")[0].trim().toLowerCase();
}

function coreBody(body: SipBody, disposition: string): Core.Body {
  return { contentDisposition: disposition, contentType: body.contentType, content: body.content };
}

function headerLines(headers: Record<string, string | string[]> | undefined): string[] {
  return Object.entries(headers ?? {}).flatMap(([k, v]) =>
    (Array.isArray(v) ? v : [v]).map((x) => `${k}: ${x.replace(/[\r\n]+/g, " ")}`),
  );
}

function responseInfo(message: Core.IncomingResponseMessage): ResponseInfo {
  return {
    status: message.statusCode ?? 0,
    reason: message.reasonPhrase ?? "",
    header: (name) => message.getHeader(name),
    body: message.body ? { contentType: message.getHeader("content-type") ?? "", content: message.body } : undefined,
  };
}

/** `transportError`: why our request never left (the core reports only a bare 503 then). */
function failure(message: Core.IncomingResponseMessage, what: string, transportError?: string): TeleportError {
  const warning = message.getHeader("warning") ?? (message.statusCode === 503 ? transportError : undefined);
  return new TeleportError(
    message.statusCode ?? 500,
    `${what}: ${message.statusCode} ${message.reasonPhrase}`,
    warning ? [warning] : [],
  );
}

/** Builds a core response from the seam's (status, reason, opts). */
function responseOptions(
  status: number,
  reason: string | undefined,
  opts: ResponseOptions | undefined,
  disposition: string,
): Core.ResponseOptions {
  const extraHeaders = headerLines(opts?.headers);
  if (opts?.body) extraHeaders.push(`Content-Disposition: ${disposition}`);
  return {
    statusCode: status,
    reasonPhrase: reason,
    extraHeaders,
    body: opts?.body ? coreBody(opts.body, disposition) : undefined,
  };
}

function answer(
  uas: Core.IncomingRequest,
  status: number,
  reason: string | undefined,
  opts: ResponseOptions | undefined,
  disposition = "render",
): void {
  const options = responseOptions(status, reason, opts, disposition);
  if (status >= 200 && status < 300) uas.accept(options);
  else uas.reject(options);
}

export class SipJsBackend implements SipBackend {
  readonly aor: string;
  private readonly aorUri: URI;
  private readonly logger: Logger;
  private readonly transport: NodeTransport;
  private core?: Core.UserAgentCore;
  private handlers: SipHandlers = {};
  private readonly peers = new WeakMap<Core.IncomingRequestMessage, Peer>();
  private registration?: { callId: string; cseq: number; timer?: NodeJS.Timeout };

  constructor(
    private readonly config: SipConfig,
    transportOverrides: Partial<TransportOptions> = {},
  ) {
    this.aor = config.aor;
    this.aorUri = parseUri(config.aor);
    this.logger = config.logger ?? silentLogger;
    this.transport = new NodeTransport({
      listen: config.listen,
      tls: config.tls,
      logger: this.logger,
      sipTrace: config.sipTrace ?? false,
      limits: config.limits,
      ...transportOverrides,
    });
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
        onInvite: (req) => this.receiveInvite(req),
        onMessage: (req) => this.receivePlain(req),
      },
    );
    this.transport.onMessage = (text, source) => this.receive(text, source);
  }

  async stop(): Promise<void> {
    if (this.registration?.timer) clearTimeout(this.registration.timer);
    this.core?.dispose();
    this.core = undefined;
    await this.transport.stop();
  }

  invite(target: string, body: SipBody, opts: OutgoingInviteOptions = {}): OutgoingInvite {
    let current: Core.OutgoingInviteRequest | undefined;
    let cancelled = false;
    const established = new Promise<{ dialog: Dialog; response: ResponseInfo }>((resolve, reject) => {
      let settled = false;
      const limit = opts.answerTimeoutMs;
      const timer =
        limit === undefined
          ? undefined
          : setTimeout(() => {
              if (settled) return;
              settled = true; // a 200 that still comes is hung up (onAccept below)
              current?.cancel();
              reject(
                new TeleportError(408, "Request Timeout", [
                  `no final answer to the INVITE within ${limit / 1000} s (the destination may have crashed while arming); CANCEL sent, nothing was migrated`,
                ]),
              );
            }, limit);
      const done = () => clearTimeout(timer);
      const send = (uri: URI, hops: number): void => {
        const extra = [
          `Contact: ${this.contactHeader()}`,
          "Content-Disposition: session",
          ...CAPABILITIES,
          ...headerLines(opts.headers),
        ];
        const message = this.requireCore().makeOutgoingRequestMessage(
          "INVITE",
          uri,
          this.aorUri,
          parseUri(target),
          {},
          extra,
          coreBody(body, "session"),
        );
        current = this.requireCore().invite(message, {
          onProgress: (r) => opts.onProgress?.(responseInfo(r.message)),
          onAccept: (r) => {
            done();
            r.ack();
            if (settled) return void r.session.bye(); // a second fork answered: hang it up
            settled = true;
            resolve({ dialog: new CoreDialog(r.session, this.peers, this.logger), response: responseInfo(r.message) });
          },
          onRedirect: (r) => {
            const contact = r.message.parseHeader("contact") as { uri?: URI } | undefined;
            if (!cancelled && contact?.uri && hops < MAX_REDIRECTS) {
              this.logger.info("sip invite redirected", {
                from: uri.toString(),
                to: contact.uri.toString(),
                status: r.message.statusCode,
              });
              send(contact.uri, hops + 1);
            } else {
              done();
              reject(
                failure(r.message, hops < MAX_REDIRECTS ? "redirect without a usable Contact" : "too many redirects"),
              );
            }
          },
          onReject: (r) => {
            done();
            reject(failure(r.message, `INVITE ${uri.toString()} failed`, this.transport.sendError(message.callId)));
          },
        });
      };
      send(parseUri(target), 0);
    });
    return {
      established,
      cancel: () => {
        cancelled = true;
        current?.cancel();
      },
    };
  }

  message(target: string, body: SipBody): Promise<ResponseInfo> {
    const uri = parseUri(target);
    const msg = this.requireCore().makeOutgoingRequestMessage(
      "MESSAGE",
      uri,
      this.aorUri,
      uri,
      {},
      [],
      coreBody(body, "render"),
    );
    return new Promise((resolve, reject) => {
      this.requireCore().message(msg, {
        onAccept: (r) => resolve(responseInfo(r.message)),
        onReject: (r) => reject(failure(r.message, `MESSAGE ${target} failed`)),
      });
    });
  }

  /** Sends OPTIONS (a health check of a peer or proxy); resolves with its 200. */
  options(target: string): Promise<ResponseInfo> {
    const uri = parseUri(target);
    const msg = this.requireCore().makeOutgoingRequestMessage("OPTIONS", uri, this.aorUri, uri, {}, [
      `Accept: ${NRDL_CONTENT_TYPE}`,
    ]);
    return new Promise((resolve, reject) => {
      this.requireCore().request(msg, {
        onAccept: (r) => resolve(responseInfo(r.message)),
        onReject: (r) => reject(failure(r.message, `OPTIONS ${target} failed`)),
      });
    });
  }

  register(): Promise<void> {
    this.registration ??= { callId: crypto.randomBytes(10).toString("hex"), cseq: 1 };
    return this.sendRegister(this.config.registerExpires ?? 600);
  }

  async unregister(): Promise<void> {
    if (!this.registration) return;
    if (this.registration.timer) clearTimeout(this.registration.timer);
    await this.sendRegister(0);
    this.registration = undefined;
  }

  private contactHeader(): string {
    return `<sip:${this.aorUri.user ?? "teleport"}@${PLACEHOLDER_HOST}>`;
  }

  private requireCore(): Core.UserAgentCore {
    if (!this.core) throw new TeleportError(500, "SIP backend not started");
    return this.core;
  }

  private sendRegister(expires: number): Promise<void> {
    const reg = this.registration;
    if (!reg) return Promise.resolve();
    const registrar = parseUri(this.config.registrar ?? `sip:${this.aorUri.host}`);
    const msg = this.requireCore().makeOutgoingRequestMessage(
      "REGISTER",
      registrar,
      this.aorUri,
      this.aorUri,
      { callId: reg.callId, cseq: reg.cseq },
      [`Contact: ${this.contactHeader()};expires=${expires}`, `Expires: ${expires}`],
    );
    return new Promise((resolve, reject) => {
      this.requireCore().register(msg, {
        onAccept: (r) => {
          reg.cseq = msg.cseq + 1; // digest retries bumped the CSeq on the message
          if (expires > 0) {
            const granted = Number(
              r.message.getHeader("expires") ??
                /expires=(\d+)/i.exec(r.message.getHeader("contact") ?? "")?.[1] ??
                expires,
            );
            // Refresh ahead of expiry (RFC 3261 10.2.4), at least every few seconds apart.
            reg.timer = setTimeout(
              () => {
                this.sendRegister(expires).catch((err: unknown) =>
                  this.logger.warn("sip registration refresh failed", { error: String(err) }),
                );
              },
              Math.max(2, granted * 0.8) * 1000,
            );
            reg.timer.unref();
          }
          resolve();
        },
        onReject: (r) => {
          reg.cseq = msg.cseq + 1;
          reject(failure(r.message, `REGISTER at ${registrar.toString()} failed`));
        },
      });
    });
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
        core.replyStateless(message, { statusCode: 200, extraHeaders: [...CAPABILITIES, "Supported: "] });
        return;
      }
      if (
        message.toTag &&
        message.method !== "ACK" &&
        message.method !== "CANCEL" &&
        this.refusedInDialog(core, message)
      )
        return;
      core.receiveIncomingRequestFromTransport(message);
    } catch (err) {
      this.logger.warn("sip message processing failed", {
        from: `${source.address}:${source.port}`,
        error: String(err),
      });
    }
  }

  private refusedInDialog(core: Core.UserAgentCore, message: Core.IncomingRequestMessage): boolean {
    const refusal = this.handlers.authorize?.(incomingRequest(message, this.peers));
    if (!refusal) return false;
    const { error, headers } = refusal;
    const extraHeaders = [
      ...headerLines(headers),
      warning(message.ruri?.host ?? "sip-teleport", [error.reason, ...error.details].join("; ")),
    ];
    core.replyStateless(message, { statusCode: error.status, reasonPhrase: error.reason, extraHeaders });
    return true;
  }

  private receivePlain(uas: Core.IncomingRequest): void {
    const handler = this.handlers.onMessage;
    if (!handler) return void uas.reject({ statusCode: 405 });
    handler(incomingRequest(uas.message, this.peers), {
      send: (status, reason, opts) => answer(uas, status, reason, opts),
    });
  }

  private receiveInvite(uas: Core.IncomingInviteRequest): void {
    const msg = uas.message;
    uas.trying();
    const warnHost = msg.ruri?.host ?? "sip-teleport";
    const type = mediaType(msg.getHeader("content-type"));
    if (msg.body && type !== NRDL_CONTENT_TYPE) {
      // A softphone's SDP: refuse it without disturbing anything else.
      uas.reject({ statusCode: 415, extraHeaders: [`Accept: ${NRDL_CONTENT_TYPE}`] });
      return;
    }
    if (!msg.body) {
      uas.reject({
        statusCode: 400,
        reasonPhrase: "Missing NRDL Offer",
        extraHeaders: [warning(warnHost, "INVITE carries no NRDL offer")],
      });
      return;
    }
    const handler = this.handlers.onInvite;
    if (!handler) return void uas.reject({ statusCode: 480 });
    let answered = false;
    const cancelHandlers: Array<() => void> = [];
    uas.delegate = {
      onCancel: () => {
        if (answered) return;
        answered = true;
        uas.reject({ statusCode: 487 });
        for (const h of cancelHandlers) h();
      },
    };
    const once = (what: string, respond: () => void): void => {
      if (answered) throw new TeleportError(500, `INVITE already answered, cannot ${what}`);
      respond();
      answered = true;
    };
    const responder: InviteResponder = {
      progress: (status, reason) => {
        if (!answered) uas.progress({ statusCode: status, reasonPhrase: reason });
      },
      reject: (error, opts) => {
        const options = responseOptions(error.status, undefined, opts, "render");
        const text = [error.reason, ...error.details].join("; ");
        options.extraHeaders = [...(options.extraHeaders ?? []), warning(warnHost, text)];
        once("reject", () => uas.reject(options));
      },
      redirect: (target, status = 302) =>
        once("redirect", () => uas.redirect([parseUri(target)], { statusCode: status })),
      accept: (body, opts) => {
        const options = responseOptions(200, undefined, { ...opts, body }, "session");
        options.extraHeaders = [
          ...(options.extraHeaders ?? []),
          `Recv-Info: ${INFO_PACKAGE}`,
          `Accept: ${NRDL_CONTENT_TYPE}`,
        ];
        let session: Core.Session | undefined;
        once("accept", () => (session = uas.accept(options).session));
        if (!session) throw new TeleportError(500, "core returned no session");
        const dialog = new CoreDialog(session, this.peers, this.logger);
        const acked = new Promise<void>((resolve, reject) => dialog.awaitAck(resolve, reject));
        acked.catch(() => undefined); // callers that ignore `acked` still see onTerminated
        return { dialog, acked };
      },
      onCancel: (h) => cancelHandlers.push(h),
    };
    try {
      handler(incomingRequest(msg, this.peers), responder);
    } catch (err) {
      if (!answered) responder.reject(TeleportError.from(err));
      else throw err;
    }
  }
}

/** Digest credentials that answer only the configured realm's challenges (any realm when none is set). */
/**
 * Our own digest client: sip.js's speaks MD5 only, RFC 8760 wants SHA-256 first. It keeps its
 * state here and overrides both methods the core calls (authenticate, toString).
 */
class RealmDigest extends Core.DigestAuthentication {
  private nonceCount = 0;
  private header = "";

  constructor(
    loggerFactory: Core.LoggerFactory,
    private readonly user: string,
    private readonly secret: string,
    private readonly onlyRealm: string | undefined,
  ) {
    super(loggerFactory, undefined, user, secret);
  }

  override authenticate(request: Core.OutgoingRequestMessage, challenge: DigestChallenge): boolean {
    if (this.onlyRealm !== undefined && challenge.realm !== this.onlyRealm) return false;
    const algorithm = (challenge.algorithm ?? "MD5").toUpperCase();
    if ((algorithm !== "MD5" && algorithm !== "SHA-256") || !challenge.realm || !challenge.nonce) return false;
    const qops = String(challenge.qop ?? "")
      .split(",")
      .map((q) => q.trim());
    if (challenge.qop && !qops.includes("auth")) return false;
    const h = (s: string) =>
      crypto
        .createHash(algorithm === "MD5" ? "md5" : "sha256")
        .update(s)
        .digest("hex");
    const uri = request.ruri.toString();
    const ha1 = h(`${this.user}:${challenge.realm}:${this.secret}`);
    const ha2 = h(`${request.method}:${uri}`);
    this.nonceCount++;
    const nc = this.nonceCount.toString(16).padStart(8, "0");
    const cnonce = crypto.randomBytes(8).toString("hex");
    const response = challenge.qop
      ? h(`${ha1}:${challenge.nonce}:${nc}:${cnonce}:auth:${ha2}`)
      : h(`${ha1}:${challenge.nonce}:${ha2}`);
    const params = [
      `algorithm=${algorithm}`,
      `username="${this.user}"`,
      `realm="${challenge.realm}"`,
      `nonce="${challenge.nonce}"`,
      `uri="${uri}"`,
      `response="${response}"`,
    ];
    if (challenge.opaque) params.push(`opaque="${challenge.opaque}"`);
    if (challenge.qop) params.push("qop=auth", `cnonce="${cnonce}"`, `nc=${nc}`);
    this.header = `Digest ${params.join(", ")}`;
    return true;
  }

  override toString(): string {
    return this.header;
  }
}

interface DigestChallenge {
  realm?: string;
  nonce?: string;
  algorithm?: string;
  qop?: string | string[];
  opaque?: string;
}

/** `Warning: 399 host "text"` (RFC 3261 20.43), quotes and line breaks made safe. */
function warning(host: string, text: string): string {
  return `Warning: 399 ${host} "${text.replace(/["\\]/g, "'").replace(/[\r\n]+/g, " ")}"`;
}

function incomingRequest(
  msg: Core.IncomingRequestMessage,
  peers: WeakMap<Core.IncomingRequestMessage, Peer>,
): IncomingRequest {
  return {
    method: msg.method,
    ruri: msg.ruri?.toString() ?? "",
    callId: msg.callId,
    fromUri: msg.from.uri.toString(),
    toUri: msg.to.uri.toString(),
    header: (name) => msg.getHeader(name),
    body: msg.body ? { contentType: msg.getHeader("content-type") ?? "", content: msg.body } : undefined,
    source: peers.get(msg) ?? { address: "", port: 0, transport: "udp" },
  };
}

/** A confirmed INVITE dialog on the core's Session. */
class CoreDialog implements Dialog {
  readonly id: string;
  readonly callId: string;
  readonly remoteUri: string;
  private infoHandler?: (req: IncomingRequest, res: Responder) => void;
  private byeHandler?: (req: IncomingRequest, res: Responder) => void;
  private readonly terminatedHandlers: Array<(reason: string) => void> = [];
  private ended?: string;
  private ack?: { resolve: () => void; reject: (err: TeleportError) => void };

  constructor(
    private readonly session: Core.Session,
    private readonly peers: WeakMap<Core.IncomingRequestMessage, Peer>,
    private readonly logger: Logger,
  ) {
    this.id = session.id;
    this.callId = session.callId;
    this.remoteUri = session.remoteURI.toString();
    session.delegate = {
      onAck: () => {
        this.ack?.resolve();
        this.ack = undefined;
      },
      onAckTimeout: () => {
        this.ack?.reject(new TeleportError(408, "no ACK for our 200 OK (Timer H)"));
        this.ack = undefined;
        this.bye().catch(() => undefined);
      },
      onInfo: (uas) => this.receiveInfo(uas),
      onBye: (uas) => this.receiveBye(uas),
    };
  }

  awaitAck(resolve: () => void, reject: (err: TeleportError) => void): void {
    this.ack = { resolve, reject };
  }

  /**
   * sip.js retries a challenged in-dialog request with CSeq + 1 but does not advance the
   * dialog's own counter, so the next request would reuse that CSeq (and be refused as out of
   * order). Requests of one dialog go one at a time (the status reporter queues them), so
   * catching up after each answer is enough.
   */
  private syncCseq(sent: Core.OutgoingRequestMessage | undefined): void {
    const dialog = this.session;
    if (!sent || !(dialog instanceof Core.Dialog)) return;
    while ((dialog.localSequenceNumber ?? sent.cseq) < sent.cseq) dialog.incrementLocalSequenceNumber();
  }

  info(body: SipBody): Promise<ResponseInfo> {
    if (this.ended) return Promise.reject(new TeleportError(481, `dialog already ended (${this.ended})`));
    return new Promise((resolve, reject) => {
      const request = this.session.info(
        {
          onAccept: (r) => {
            this.syncCseq(request.message);
            resolve(responseInfo(r.message));
          },
          onReject: (r) => {
            this.syncCseq(request.message);
            const status = r.message.statusCode ?? 500;
            if (status === 408 || status === 481) this.terminate(`INFO got ${status}`);
            reject(failure(r.message, "INFO failed"));
          },
        },
        {
          extraHeaders: [`Info-Package: ${INFO_PACKAGE}`, "Content-Disposition: Info-Package"],
          body: coreBody(body, "Info-Package"),
        },
      );
    });
  }

  bye(body?: SipBody): Promise<ResponseInfo> {
    if (this.ended) return Promise.reject(new TeleportError(481, `dialog already ended (${this.ended})`));
    return new Promise((resolve, reject) => {
      const done = (r: AnyIncomingResponse, ok: boolean): void => {
        this.terminate("BYE sent");
        if (ok) resolve(responseInfo(r.message));
        else reject(failure(r.message, "BYE failed"));
      };
      this.session.bye(
        { onAccept: (r) => done(r, true), onReject: (r) => done(r, false) },
        body ? { extraHeaders: ["Content-Disposition: render"], body: coreBody(body, "render") } : undefined,
      );
    });
  }

  onInfo(handler: (req: IncomingRequest, res: Responder) => void): void {
    this.infoHandler = handler;
  }

  onBye(handler: (req: IncomingRequest, res: Responder) => void): void {
    this.byeHandler = handler;
  }

  onTerminated(handler: (reason: string) => void): void {
    if (this.ended) handler(this.ended);
    else this.terminatedHandlers.push(handler);
  }

  private receiveInfo(uas: Core.IncomingRequest): void {
    const pkg = (uas.message.getHeader("info-package") ?? "").split(";")[0].trim().toLowerCase();
    if (pkg !== INFO_PACKAGE) {
      uas.reject({ statusCode: 469, extraHeaders: [`Recv-Info: ${INFO_PACKAGE}`] });
      return;
    }
    const req = incomingRequest(uas.message, this.peers);
    if (!this.infoHandler) return void uas.accept({ statusCode: 200 });
    let answered = false;
    try {
      this.infoHandler(req, {
        send: (status, reason, opts) => {
          answered = true;
          answer(uas, status, reason, opts);
        },
      });
    } catch (err) {
      this.logger.warn("sip INFO handler failed", { error: String(err) });
      if (!answered) uas.reject({ statusCode: 500 });
    }
  }

  private receiveBye(uas: Core.IncomingRequest): void {
    const req = incomingRequest(uas.message, this.peers);
    const respond = (status: number, reason?: string, opts?: ResponseOptions): void => {
      answer(uas, status, reason, opts);
      this.terminate("BYE received");
    };
    if (!this.byeHandler) return respond(200);
    try {
      this.byeHandler(req, { send: respond });
    } catch (err) {
      this.logger.warn("sip BYE handler failed", { error: String(err) });
      respond(500);
    }
  }

  private terminate(reason: string): void {
    if (this.ended) return;
    this.ended = reason;
    this.ack?.reject(new TeleportError(481, `dialog ended before ACK (${reason})`));
    for (const h of this.terminatedHandlers.splice(0)) h(reason);
  }
}
