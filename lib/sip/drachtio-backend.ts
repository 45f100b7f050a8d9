/**
 * The SipBackend on drachtio-srf: the agent is a drachtio app; drachtio-server (run by the
 * operator, or by our tests) owns the SIP sockets, transactions and retransmissions. Where srf
 * falls short we work around it here: SHA-256 digest (srf's client speaks MD5 only), the report
 * in the 200 to BYE (srf answers BYE bare), multi-valued headers (srf joins them with commas),
 * and --sip-trace (srf has no wire hook: each send and receive is traced where we make it).
 */
import { TeleportError } from "../errors";
import { maskSecrets, silentLogger, type Logger } from "../log/logger";
import type {
  IncomingRequest,
  InviteResponder,
  OutgoingInvite,
  OutgoingInviteOptions,
  Peer,
  Responder,
  ResponseInfo,
  RequestRefusal,
  ResponseOptions,
  SipBackend,
  SipBody,
  SipHandlers,
  TraceEvent,
} from "./backend";
import { DEFAULT_LIMITS, INFO_PACKAGE, NRDL_CONTENT_TYPE, type SipConfig } from "./config";
import { InviteFloodGuard } from "./rate";
import { answerChallenges } from "./digest";
import type { BoundListener } from "./transport";
import { DrachtioDialog, type DialogContext } from "./drachtio/dialog";
import {
  expectDialog,
  failure,
  forgetExpected,
  headerValues,
  incomingRequest,
  isSipError,
  loadSrf,
  peerOf,
  transportOf,
  rawText,
  responseInfo,
  srfHeaders,
  strayInDialog,
  traceAckOf,
  warningValue,
  type SrfApi,
  type SrfDialog,
  type SrfIncomingRequest,
  type SrfMessage,
  type SrfOutgoingRequest,
  type SrfResponse,
} from "./drachtio/srf";
import { NOT_A_PHONE, NOT_A_PHONE_REASON } from "./not-a-phone";

/** How the agent reaches its drachtio-server (the admin port, not SIP). */
export interface DrachtioConnection {
  host: string;
  port: number;
  /** Shared secret of the admin port; never logged. */
  secret: string;
}

export interface DrachtioSipConfig extends SipConfig {
  drachtio: DrachtioConnection;
}

const ALLOW = "INVITE, ACK, CANCEL, BYE, INFO, OPTIONS, MESSAGE";
const CAPABILITIES = { Allow: ALLOW, Accept: NRDL_CONTENT_TYPE, "Recv-Info": INFO_PACKAGE };
/** RFC 3261 Timer H (64 x T1): how long a 200 waits for its ACK. */
const ACK_WAIT_MS = 32_000;

function mediaType(contentType: string | undefined): string {
  return (contentType ?? "").split(";")[0].trim().toLowerCase();
}

export class DrachtioBackend implements SipBackend {
  readonly aor: string;
  /** The SIP contacts of the drachtio-server we are attached to (known once connected). */
  listeners: BoundListener[] = [];
  private srf?: SrfApi;
  private handlers: SipHandlers = {};
  private readonly tracers = new Set<(e: TraceEvent) => void>();
  private readonly dialogs = new Set<DrachtioDialog>();
  /** Outgoing INVITEs not answered yet: failed at once when the server connection drops. */
  private readonly pending = new Set<(err: TeleportError) => void>();
  private readonly logger: Logger | undefined;
  private connected = false;
  private stopping = false;
  private nc = 0;
  /** limits.invitesPerSecond: answered before the agent sees the INVITE, as the sip.js transport does. */
  private readonly inviteFlood: InviteFloodGuard;

  constructor(protected readonly config: DrachtioSipConfig) {
    this.aor = config.aor;
    this.logger = config.logger;
    this.inviteFlood = new InviteFloodGuard({ ...DEFAULT_LIMITS, ...config.limits }, this.logger ?? silentLogger);
  }

  setHandlers(handlers: SipHandlers): void {
    this.handlers = handlers;
  }

  onTrace(handler: (e: TraceEvent) => void): () => void {
    this.tracers.add(handler);
    return () => this.tracers.delete(handler);
  }

  private trace(direction: "sent" | "received", m: SrfMessage): void {
    if (!this.config.sipTrace && this.tracers.size === 0) return;
    const message = maskSecrets(rawText(m));
    const peer = direction === "received" ? (m.source_address ? peerOf(m) : undefined) : nextHop(message);
    if (this.config.sipTrace) this.logger?.info(`sip ${direction} via drachtio\n${message}`);
    const e: TraceEvent = { direction, message, at: Date.now(), peer };
    for (const t of this.tracers) t(e);
  }

  private respond(res: SrfResponse, status: number, reason?: string, opts?: ResponseOptions): void {
    if (res.finalResponseSent) return;
    const headers = srfHeaders(opts?.headers);
    if (opts?.body) headers["Content-Type"] = opts.body.contentType;
    const sendOpts = { headers, body: opts?.body?.content };
    const done = (err: unknown, msg?: SrfMessage): void => {
      if (err) this.logger?.warn("sip response not sent", { status, error: String(err) });
      else if (msg) this.trace("sent", msg);
    };
    if (reason) res.send(status, reason, sendOpts, done);
    else res.send(status, sendOpts, done);
  }

  /** Connects to drachtio-server; srf reconnects by itself after a server restart. */
  async start(): Promise<void> {
    const Srf = loadSrf();
    const srf = new Srf();
    this.srf = srf;
    srf.invite((req, res) => this.receiveInvite(req, res));
    srf.options((req, res) => {
      this.trace("received", req);
      const send = (status: number, reason?: string, opts?: ResponseOptions) =>
        this.respond(res, status, reason, { ...opts, headers: { ...CAPABILITIES, Supported: "", ...opts?.headers } });
      const handler = this.handlers.onOptions; // capacity queries and dry runs
      if (handler) handler(incomingRequest(req), { send });
      else send(200);
    });
    srf.message((req, res) => this.receivePlain(req, res));
    srf.use((req, res, next) => strayInDialog(req, res, next, (rs) => this.noDialog(req, rs)));
    const { host, port, secret } = this.config.drachtio;
    const first = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new TeleportError(503, `drachtio-server at ${host}:${port} did not answer in 10 s`)),
        10_000,
      );
      srf.on("connect", (err, hostport) => {
        if (err) return reject(new TeleportError(503, `drachtio-server at ${host}:${port}: ${String(err)}`));
        clearTimeout(timer);
        this.connected = true;
        this.listeners = parseHostport(hostport);
        this.logger?.info("connected to drachtio-server", { host, port, sip: hostport });
        resolve();
      });
    });
    srf.on("error", (err) => this.logger?.warn("drachtio-server connection error", { error: String(err) }));
    // srf emits close then keeps reconnecting; the server lost our dialogs with the connection.
    srf.on("close", () => this.connectionLost());
    srf.on("reconnecting", () => this.connectionLost());
    srf.connect({ host, port, secret });
    await first;
  }

  private noDialog(req: SrfIncomingRequest, res: SrfResponse): void {
    this.trace("received", req);
    this.respond(res, 481, "Call/Transaction Does Not Exist");
  }

  /** Every dialog in flight ends now (the agents disarm and leave VMs where they are). */
  private connectionLost(): void {
    if (this.stopping || !this.connected) return;
    this.connected = false;
    const why = "drachtio-server connection lost";
    this.logger?.warn(why, { dialogs: this.dialogs.size, pending: this.pending.size });
    for (const fail of [...this.pending]) fail(new TeleportError(503, why));
    for (const d of [...this.dialogs]) d.terminate(why);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.refresh);
    for (const d of [...this.dialogs]) d.terminate("agent stopping");
    this.srf?.disconnect();
    this.srf = undefined;
  }

  private get api(): SrfApi {
    if (!this.srf) throw new TeleportError(503, "drachtio backend not started");
    return this.srf;
  }

  private dialogContext(): DialogContext {
    return {
      srf: this.api,
      trace: (dir, m) => this.trace(dir, m),
      logger: this.logger ?? silentLogger,
      credentials: this.config.credentials,
      authorize: (req) => {
        const r = this.handlers.authorize?.(req);
        if (!r) return undefined;
        const host = hostOf(req.ruri);
        const headers = srfHeaders({
          ...r.headers,
          Warning: warningValue(host, [r.error.reason, ...r.error.details].join("; ")),
        });
        return { status: r.error.status, reason: r.error.reason, headers };
      },
      respond: (res, status, reason, opts) => this.respond(res, status, reason, opts),
      forget: (d) => this.dialogs.delete(d),
    };
  }

  private adopt(d: SrfDialog): DrachtioDialog {
    const dialog = new DrachtioDialog(d, this.dialogContext());
    this.dialogs.add(dialog);
    return dialog;
  }

  /** SipHandlers.admit's refusal, in drachtio-server's own transaction (an app cannot answer statelessly). */
  private refuse(res: SrfResponse, req: IncomingRequest, r: RequestRefusal): void {
    const headers = {
      ...r.headers,
      Warning: warningValue(hostOf(req.ruri), [r.error.reason, ...r.error.details].join("; ")),
    };
    this.respond(res, r.error.status, r.error.reason, { headers });
  }

  private receivePlain(req: SrfIncomingRequest, res: SrfResponse): void {
    this.trace("received", req);
    const seam = incomingRequest(req);
    const refusal = this.handlers.admit?.(seam);
    if (refusal) return this.refuse(res, seam, refusal);
    const handler = this.handlers.onMessage;
    if (!handler) return this.respond(res, 405);
    handler(seam, { send: (status, reason, opts) => this.respond(res, status, reason, opts) });
  }

  private receiveInvite(req: SrfIncomingRequest, res: SrfResponse): void {
    this.trace("received", req);
    const host = hostOf(req.uri ?? "");
    const refuse = (status: number, reason: string, text?: string, headers: Record<string, string> = {}): void =>
      this.respond(res, status, reason, {
        headers: text ? { ...headers, Warning: warningValue(host, text) } : headers,
      });
    const flood = this.inviteFlood.refuse(req.source_address ?? "");
    if (flood) return refuse(503, "Service Unavailable", flood.warning, { "Retry-After": String(flood.retryAfterS) });
    const seam = incomingRequest(req);
    const refusal = this.handlers.admit?.(seam);
    if (refusal) return this.refuse(res, seam, refusal);
    if (req.body && mediaType(req.get("Content-Type")) !== NRDL_CONTENT_TYPE)
      return refuse(415, NOT_A_PHONE_REASON, NOT_A_PHONE, { Accept: NRDL_CONTENT_TYPE });
    if (!req.body) return refuse(400, "Missing NRDL Offer", "INVITE carries no NRDL offer");
    const handler = this.handlers.onInvite;
    if (!handler) return refuse(480, "Temporarily Unavailable");
    let answered = false;
    const cancelHandlers: Array<() => void> = [];
    req.on("cancel", () => {
      if (answered) return;
      answered = true;
      this.respond(res, 487, "Request Terminated");
      for (const h of cancelHandlers) h();
    });
    const once = (what: string, respond: () => void): void => {
      if (answered) throw new TeleportError(500, `INVITE already answered, cannot ${what}`);
      answered = true;
      respond();
    };
    const responder: InviteResponder = {
      progress: (status, reason) => {
        if (!answered) this.respond(res, status, reason);
      },
      reject: (error, opts) =>
        once("reject", () =>
          this.respond(res, error.status, error.reason, {
            ...opts,
            headers: {
              ...srfHeaders(opts?.headers),
              Warning: warningValue(host, [error.reason, ...error.details].join("; ")),
            },
          }),
        ),
      redirect: (target, status = 302) =>
        once("redirect", () => this.respond(res, status, undefined, { headers: { Contact: `<${target}>` } })),
      accept: (body, opts) => {
        let dialog: DeferredDialog | undefined;
        once("accept", () => {
          const headers = {
            ...srfHeaders(opts?.headers),
            "Content-Type": body.contentType,
            "Recv-Info": INFO_PACKAGE,
            Accept: NRDL_CONTENT_TYPE,
          };
          expectDialog(req);
          const created = this.api.createUAS(req, res, { localSdp: body.content, headers });
          created.catch(() => {
            for (const [r, rs] of forgetExpected(req)) if (r.method !== "ACK") this.noDialog(r, rs);
          });
          dialog = new DeferredDialog(
            created.then((d) => this.adopt(d)),
            req,
          );
        });
        if (!dialog) throw new TeleportError(500, "drachtio returned no dialog");
        const acked = dialog.acked(ACK_WAIT_MS);
        acked.catch(() => undefined);
        return { dialog, acked };
      },
      onCancel: (h) => cancelHandlers.push(h),
    };
    try {
      handler(seam, responder);
    } catch (err) {
      if (!answered) responder.reject(TeleportError.from(err));
      else throw err;
    }
  }

  invite(target: string, body: SipBody, opts: OutgoingInviteOptions = {}): OutgoingInvite {
    let sent: SrfOutgoingRequest | undefined;
    let cancelled = false;
    let settled = false;
    let failPending: ((err: TeleportError) => void) | undefined;
    const cancel = (): void => {
      cancelled = true;
      try {
        sent?.cancel({}, (err, c) => {
          if (!err && c) this.trace("sent", c);
        });
      } catch (err) {
        this.logger?.debug("CANCEL not sent", { error: String(err) });
      }
    };
    const attempt = (extra: Record<string, string>): Promise<SrfDialog> =>
      this.api.createUAC(
        target,
        {
          localSdp: body.content,
          proxy: this.config.outboundProxy,
          headers: {
            ...opts.headers,
            ...extra,
            From: `<${this.aor}>`,
            "Content-Type": body.contentType,
            "Recv-Info": INFO_PACKAGE,
            Accept: NRDL_CONTENT_TYPE,
          },
        },
        {
          cbRequest: (err, req) => {
            if (err || !req) return;
            sent = req;
            this.trace("sent", req);
            traceAckOf(req, (ack) => this.trace("sent", ack));
            if (cancelled) cancel();
          },
          cbProvisional: (res) => {
            this.trace("received", res);
            opts.onProgress?.(responseInfo(res));
          },
        },
      );
    const established = new Promise<{ dialog: DrachtioDialog; response: ResponseInfo; target: string }>(
      (resolve, reject) => {
        failPending = (err) => {
          if (settled) return;
          settled = true;
          reject(err);
        };
        this.pending.add(failPending);
        const timer =
          opts.answerTimeoutMs !== undefined
            ? setTimeout(() => {
                failPending?.(new TeleportError(408, `no final answer in ${opts.answerTimeoutMs} ms`));
                cancel();
              }, opts.answerTimeoutMs)
            : undefined;
        const run = async (): Promise<void> => {
          let extra: Record<string, string> = {};
          for (let round = 0; ; round++) {
            try {
              const d = await attempt(extra);
              const res = (d as unknown as { res: SrfMessage }).res;
              this.trace("received", res);
              const dialog = this.adopt(d);
              if (settled) {
                // a 200 after we gave up (timeout, lost connection): ACKed by srf, hung up here
                void dialog.bye().catch(() => undefined);
                return;
              }
              settled = true;
              resolve({ dialog, response: responseInfo(res), target });
              return;
            } catch (err) {
              if (!isSipError(err)) throw new TeleportError(503, `INVITE not sent: ${String(err)}`);
              if (err.res) this.trace("received", err.res);
              const auth = err.res && round === 0 && !cancelled ? this.answer(err.res, "INVITE", target) : undefined;
              if (!auth) throw failure(err.res, err.status, "INVITE failed");
              extra = auth;
            }
          }
        };
        run()
          .catch((err: unknown) => failPending?.(TeleportError.from(err)))
          .finally(() => {
            clearTimeout(timer);
            if (failPending) this.pending.delete(failPending);
          });
      },
    );
    established.catch(() => undefined);
    return { established, cancel };
  }

  /** Authorization for a 401/407 (SHA-256 or MD5 through lib/sip/digest), or undefined. */
  private answer(res: SrfMessage, method: string, uri: string): Record<string, string> | undefined {
    const creds = this.config.credentials;
    if (!creds || (res.status !== 401 && res.status !== 407)) return undefined;
    const proxy = res.status === 407;
    const challenges = headerValues(res, proxy ? "Proxy-Authenticate" : "WWW-Authenticate");
    const auth = answerChallenges(challenges, method, uri, creds, ++this.nc);
    return auth ? { [proxy ? "Proxy-Authorization" : "Authorization"]: auth } : undefined;
  }

  /** An out-of-dialog request (OPTIONS, MESSAGE), answering one digest challenge. */
  private async request(
    method: string,
    target: string,
    headers: Record<string, string>,
    body?: SipBody,
    anyStatus = false,
  ) {
    const once = (extra: Record<string, string>): Promise<SrfMessage> =>
      new Promise((resolve, reject) => {
        const all: Record<string, string> = { ...headers, ...extra, From: `<${this.aor}>` };
        if (body) all["Content-Type"] = body.contentType;
        // the callback form: a response can arrive in the same chunk as the server's "sent"
        // receipt, before a promise continuation could attach the listener
        this.api.request(
          target,
          { method, headers: all, body: body?.content, proxy: this.config.outboundProxy },
          (err, req) => {
            if (err || !req) return reject(new TeleportError(503, `${method} not sent: ${String(err)}`));
            this.trace("sent", req);
            req.on("response", (res) => {
              this.trace("received", res);
              resolve(res);
            });
          },
        );
      });
    let res = await once({});
    const auth = this.answer(res, method, target);
    if (auth) res = await once(auth);
    const status = res.status ?? 500;
    if (status >= 300 && !anyStatus) throw failure(res, status, `${method} failed`);
    return responseInfo(res);
  }

  options(target: string): Promise<ResponseInfo> {
    return this.request("OPTIONS", target, { Accept: NRDL_CONTENT_TYPE });
  }

  query(target: string, body?: SipBody): Promise<ResponseInfo> {
    return this.request("OPTIONS", target, { Accept: NRDL_CONTENT_TYPE }, body, true);
  }

  message(target: string, body: SipBody): Promise<ResponseInfo> {
    return this.request("MESSAGE", target, {}, body);
  }

  /**
   * REGISTER our AOR, the Contact being drachtio-server's SIP address (where requests for us must
   * go), refreshed at 80 % of the granted lifetime. One Call-ID for the binding's life (RFC 3261 10.2.4).
   */
  async register(): Promise<void> {
    const expires = this.config.registerExpires ?? 600;
    const granted = await this.sendRegister(expires);
    clearTimeout(this.refresh);
    this.refresh = setTimeout(
      () =>
        void this.register().catch((err: unknown) =>
          this.logger?.warn("REGISTER refresh failed", { error: String(err) }),
        ),
      granted * 800,
    );
    this.refresh.unref();
  }

  async unregister(): Promise<void> {
    clearTimeout(this.refresh);
    if (this.srf) await this.sendRegister(0);
  }

  private refresh?: NodeJS.Timeout;
  private readonly registerCallId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}@sip-teleport`;

  private async sendRegister(expires: number): Promise<number> {
    const registrar = this.config.registrar ?? `sip:${hostOf(this.aor)}`;
    const wanted = registrar.match(/;transport=(\w+)/i)?.[1]?.toLowerCase() ?? "udp";
    const l = this.listeners.find((x) => x.transport === wanted) ?? this.listeners[0];
    if (!l) throw new TeleportError(503, "REGISTER: not attached to a drachtio-server yet");
    const user = this.aor.replace(/^sips?:/, "").split("@")[0];
    const contact = `<sip:${user}@${l.advertise}:${l.port};transport=${l.transport}>`;
    const res = await this.request("REGISTER", registrar, {
      To: `<${this.aor}>`,
      Contact: contact,
      Expires: String(expires),
      "Call-ID": this.registerCallId,
    });
    return Number(res.header("Expires") ?? /expires=(\d+)/i.exec(res.header("Contact") ?? "")?.[1] ?? expires);
  }
}

/** The dialog of an INVITE we answered, usable before srf has confirmed our 200 was sent. */
class DeferredDialog {
  readonly id: string;
  readonly callId: string;
  readonly remoteUri: string;
  private real?: DrachtioDialog;
  private failed?: TeleportError;
  private readonly queued: Array<(d: DrachtioDialog) => void> = [];
  private readonly terminated: Array<(reason: string) => void> = [];

  constructor(
    private readonly ready: Promise<DrachtioDialog>,
    req: SrfIncomingRequest,
  ) {
    this.callId = req.get("Call-ID") ?? "";
    this.id = this.callId;
    this.remoteUri = (req.get("Contact") ?? "").replace(/^.*<([^>]*)>.*$/, "$1");
    ready.then(
      (d) => {
        this.real = d;
        for (const q of this.queued.splice(0)) q(d);
      },
      (err: unknown) => {
        this.failed = TeleportError.from(err);
        for (const t of this.terminated.splice(0)) t(`200 not sent: ${this.failed.reason}`);
      },
    );
  }

  private with<T>(fn: (d: DrachtioDialog) => T): void {
    if (this.real) fn(this.real);
    else this.queued.push(fn);
  }

  acked(ms: number): Promise<void> {
    return this.ready.then((d) => d.acked(ms));
  }

  info(body: SipBody): Promise<ResponseInfo> {
    return this.ready.then((d) => d.info(body));
  }

  bye(body?: SipBody): Promise<ResponseInfo> {
    return this.ready.then((d) => d.bye(body));
  }

  onInfo(handler: (req: IncomingRequest, res: Responder) => void): void {
    this.with((d) => d.onInfo(handler));
  }

  onBye(handler: (req: IncomingRequest, res: Responder) => void): void {
    this.with((d) => d.onBye(handler));
  }

  vetRequests(check: (req: IncomingRequest) => string | undefined): void {
    this.with((d) => d.vetRequests(check));
  }

  onTerminated(handler: (reason: string) => void): void {
    if (this.failed) return handler(`200 not sent: ${this.failed.reason}`);
    this.terminated.push(handler);
    this.with((d) => d.onTerminated(handler));
  }
}

/**
 * Where a message we sent went (srf reports only the server's own address): a request to its
 * first Route (loose routing) or else its request URI, a response to its top Via.
 */
function nextHop(text: string): Peer | undefined {
  const lines = text.split(/\r?\n/);
  const header = (name: RegExp): string | undefined => lines.find((l) => name.test(l))?.replace(/^[^:]+:\s*/, "");
  if (lines[0].startsWith("SIP/2.0")) {
    const via = header(/^(via|v)\s*:/i)?.match(/^SIP\/2\.0\/(\w+)\s+([^;:\s]+)(?::(\d+))?(.*)$/i);
    if (!via) return undefined;
    const rport = via[4].match(/;rport=(\d+)/)?.[1];
    const received = via[4].match(/;received=([^;\s]+)/)?.[1];
    return { address: received ?? via[2], port: Number(rport ?? via[3] ?? 5060), transport: transportOf(via[1]) };
  }
  const route = header(/^route\s*:/i)?.match(/<([^>]+)>/)?.[1];
  const uri = route ?? lines[0].split(" ")[1] ?? "";
  const m = uri.match(/^sips?:(?:[^@]*@)?(\[[^\]]+\]|[^;:>?]+)(?::(\d+))?(.*)$/i);
  if (!m) return undefined;
  const transport = m[3].match(/;transport=(\w+)/i)?.[1];
  return { address: m[1].replace(/^\[|\]$/g, ""), port: Number(m[2] ?? 5060), transport: transportOf(transport) };
}

function hostOf(uri: string): string {
  return uri.replace(/^sips?:([^@]*@)?/, "").split(/[;:>?]/)[0] || "sip-teleport";
}

/** "udp/127.0.0.1:5090,tcp/127.0.0.1:5090" -> listeners. */
function parseHostport(hostport: string): BoundListener[] {
  return hostport
    .split(",")
    .map((s) => s.trim().match(/^(\w+)\/(.+):(\d+)$/))
    .filter((m): m is RegExpMatchArray => m !== null)
    .map((m) => ({
      transport: m[1].toLowerCase() === "tcp" ? "tcp" : m[1].toLowerCase() === "tls" ? "tls" : "udp",
      host: m[2].replace(/^\[|\]$/g, ""),
      port: Number(m[3]),
      advertise: m[2],
    }));
}
