/**
 * The part of drachtio-srf 5.0.x we use, typed here (its bundled typings are loose and partly
 * wrong), plus conversions from its messages to the seam's shapes.
 */
import { TeleportError } from "../../errors";
import type { IncomingRequest, Peer, ResponseInfo, TransportKind } from "../backend";

export interface SrfMessage {
  method?: string;
  uri?: string;
  status?: number;
  reason?: string;
  body?: string;
  callId?: string;
  source_address?: string;
  source_port?: number;
  protocol?: string;
  stackDialogId?: string;
  msg?: { raw?: string; toString(): string };
  raw?: string;
  get(name: string): string | undefined;
  has(name: string): boolean;
  getParsedHeader(name: string): { uri: string; params: Record<string, string> };
  toString(): string;
}

export interface SrfOutgoingRequest extends SrfMessage {
  cancel(opts: Record<string, never>, cb: (err: unknown, cancel?: SrfMessage) => void): void;
  on(event: "response", cb: (res: SrfMessage, ack: () => void) => void): void;
}

export interface SrfIncomingRequest extends SrfMessage {
  on(event: "cancel", cb: () => void): void;
}

export interface SrfSendOptions {
  headers?: Record<string, string>;
  body?: string;
}

export interface SrfResponse {
  readonly finalResponseSent: boolean;
  send(status: number, reason?: string | SrfSendOptions, opts?: SrfSendOptions | SendCallback, cb?: SendCallback): void;
}

type SendCallback = (err: unknown, msg?: SrfMessage) => void;

export interface SrfDialog {
  readonly id: string;
  readonly sip: { callId: string; localTag: string; remoteTag: string };
  readonly remote: { uri: string };
  connected: boolean;
  handle(req: SrfIncomingRequest, res: SrfResponse): void;
  request(opts: { method: string; headers?: Record<string, string>; body?: string }): Promise<SrfMessage>;
  on(event: "destroy", cb: (msg: SrfMessage) => void): void;
  on(event: "ack", cb: (msg: SrfMessage) => void): void;
}

export interface SrfUacOptions {
  headers?: Record<string, string>;
  localSdp: string;
  proxy?: string;
}

export interface SrfApi {
  connect(opts: { host: string; port: number; secret: string }): void;
  disconnect(): void;
  on(event: "connect", cb: (err: unknown, hostport: string) => void): void;
  on(event: "error" | "close" | "reconnecting", cb: (arg?: unknown) => void): void;
  invite(handler: (req: SrfIncomingRequest, res: SrfResponse) => void): void;
  options(handler: (req: SrfIncomingRequest, res: SrfResponse) => void): void;
  message(handler: (req: SrfIncomingRequest, res: SrfResponse) => void): void;
  use(middleware: (req: SrfIncomingRequest, res: SrfResponse, next: () => void) => void): void;
  createUAS(
    req: SrfIncomingRequest,
    res: SrfResponse,
    opts: { localSdp: string; headers: Record<string, string> },
  ): Promise<SrfDialog>;
  createUAC(
    uri: string,
    opts: SrfUacOptions,
    cbs: { cbRequest: (err: unknown, req: SrfOutgoingRequest) => void; cbProvisional: (res: SrfMessage) => void },
  ): Promise<SrfDialog>;
  request(
    uri: string,
    opts: { method: string; headers?: Record<string, string>; body?: string; proxy?: string },
    cb: (err: unknown, req?: SrfOutgoingRequest) => void,
  ): void;
  removeDialog(dialog: SrfDialog): void;
}

export type SrfConstructor = new () => SrfApi;

/** drachtio-srf loaded lazily: a sip.js-only agent never loads it. */
export function loadSrf(): SrfConstructor {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const srf = require("drachtio-srf") as SrfConstructor;
  hookAcks();
  hookDialogs();
  return srf;
}

type InDialogHandler = (req: SrfIncomingRequest, res: SrfResponse) => void;

/** Our handler for each srf dialog we own; requests of a dialog we are about to own wait here. */
const owners = new WeakMap<object, InDialogHandler>();
/**
 * Keyed by the INVITE we answer (srf's UAS Dialog keeps it as `req`), not by Call-ID: the source's
 * dialog has the same Call-ID, and when both agents share a process (tests, demo) the source
 * adopting its dialog first took the destination's waiting list away, so the BYE right behind
 * the ACK went to srf's own handler (a bare 200, the agent never told, the VMs left armed).
 */
const early = new Map<SrfIncomingRequest, Array<[SrfIncomingRequest, SrfResponse]>>();
let srfHandle: ((this: SrfDialog, req: SrfIncomingRequest, res: SrfResponse) => void) | undefined;

/** The invite of an srf Dialog (the one we answered for a UAS dialog). */
function inviteOf(d: SrfDialog): SrfIncomingRequest | undefined {
  return (d as unknown as { req?: SrfIncomingRequest }).req;
}

/**
 * The 200 we send, the ACK and the first INFO or BYE can reach srf in one read: srf then dispatches
 * them to its dialog before our code has adopted it. Requests of the dialog `invite` opens wait.
 */
export function expectDialog(invite: SrfIncomingRequest): void {
  early.set(invite, []);
}

/** No dialog after all (200 not sent, CANCEL): the requests that waited for it, to be refused. */
export function forgetExpected(invite: SrfIncomingRequest): Array<[SrfIncomingRequest, SrfResponse]> {
  const waiting = early.get(invite) ?? [];
  early.delete(invite);
  return waiting;
}

const fromTag = (m: SrfMessage): string | undefined => m.getParsedHeader("From").params.tag;

/**
 * Our middleware after srf's dialog(), which passes on an in-dialog request of a dialog srf does
 * not have. srf makes the Dialog of our 200 when the server confirms it went out; were the ACK or
 * a BYE/INFO ever told before that confirmation, it waits for that dialog like the requests above
 * (matched by Call-ID and the caller's From tag). A BYE or INFO of no dialog of ours is `refuse`d
 * (481 from us, rather than srf's 404); anything else goes on.
 */
export function strayInDialog(
  req: SrfIncomingRequest,
  res: SrfResponse,
  next: () => void,
  refuse: (res: SrfResponse) => void,
): void {
  if (!req.stackDialogId || !["ACK", "BYE", "INFO"].includes(req.method ?? "")) return next();
  const callId = req.get("Call-ID");
  for (const [invite, waiting] of early)
    if (invite.get("Call-ID") === callId && fromTag(invite) === fromTag(req)) return void waiting.push([req, res]);
  if (req.method === "ACK") return next();
  refuse(res);
}

/**
 * From now on `handler` sees this dialog's requests. Those that waited go on the next turn of the
 * event loop, not now: the agent attaches its BYE and INFO handlers once the dialog is adopted (a
 * promise later), and a BYE handed over before that would be answered bare, without the report.
 */
export function ownDialog(d: SrfDialog, handler: InDialogHandler): void {
  owners.set(d, handler);
  const invite = inviteOf(d);
  const waiting = (invite && early.get(invite)) ?? [];
  if (invite) early.delete(invite);
  if (waiting.length) setImmediate(() => waiting.forEach(([req, res]) => handler(req, res)));
}

/** srf's own handling of an in-dialog request (ACK events, re-INVITE, ...). */
export function srfDefault(d: SrfDialog, req: SrfIncomingRequest, res: SrfResponse): void {
  srfHandle?.call(d, req, res);
}

function hookDialogs(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Dialog = require("drachtio-srf/lib/dialog") as { prototype: SrfDialog & { __stOwned?: true } };
  if (Dialog.prototype.__stOwned) return;
  srfHandle = Dialog.prototype.handle;
  Dialog.prototype.handle = function (this: SrfDialog, req: SrfIncomingRequest, res: SrfResponse) {
    const own = owners.get(this);
    if (own) return own(req, res);
    const invite = inviteOf(this);
    const waiting = invite && early.get(invite);
    if (waiting) return void waiting.push([req, res]);
    srfHandle?.call(this, req, res);
  };
  Dialog.prototype.__stOwned = true;
}

/** Who traces the ACK srf sends for a 2xx to one of our INVITEs (keyed by that INVITE). */
const ackTracers = new WeakMap<object, (ack: SrfMessage) => void>();

export function traceAckOf(invite: object, tracer: (ack: SrfMessage) => void): void {
  ackTracers.set(invite, tracer);
}

type SendAck = (
  this: { req?: object },
  dialogId: string,
  opts?: unknown,
  cb?: (e: unknown, m?: SrfMessage) => void,
) => void;

/**
 * srf ACKs a 2xx itself (Response#sendAck, no callback) and never shows the ACK it sent; we wrap
 * that one method so the ACK reaches --sip-trace like every other message we send.
 */
function hookAcks(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Response = require("drachtio-srf/lib/response") as { prototype: { sendAck: SendAck; __stTraced?: true } };
  if (Response.prototype.__stTraced) return;
  const original = Response.prototype.sendAck;
  Response.prototype.sendAck = function (dialogId, opts, cb) {
    const tracer = this.req ? ackTracers.get(this.req) : undefined;
    original.call(this, dialogId, opts, (err, msg) => {
      if (!err && msg && tracer) tracer(msg);
      cb?.(err, msg);
    });
  };
  Response.prototype.__stTraced = true;
}

/** The error drachtio-srf rejects with on a final non-2xx (SipError with its response). */
export interface SrfSipError {
  status: number;
  reason?: string;
  res?: SrfMessage;
}

export function isSipError(err: unknown): err is SrfSipError {
  return typeof err === "object" && err !== null && typeof (err as { status?: unknown }).status === "number";
}

/** The message as it crossed the wire (srf keeps the server's text in `raw` or `msg.raw`). */
export function rawText(m: SrfMessage): string {
  return m.raw ?? m.msg?.raw ?? String(m.msg ?? m);
}

/**
 * Every value of a header, one per line of the raw text: srf joins repeated headers with commas,
 * which breaks WWW-Authenticate (each challenge has commas of its own).
 */
export function headerValues(m: SrfMessage, name: string): string[] {
  const lower = name.toLowerCase();
  const head = rawText(m).split(/\r?\n\r?\n/)[0];
  const values = head
    .split(/\r?\n/)
    .slice(1)
    .map((line) => line.match(/^([^:\s]+)\s*:\s*(.*)$/))
    .filter((m2): m2 is RegExpMatchArray => m2 !== null && m2[1].toLowerCase() === lower)
    .map((m2) => m2[2].trim());
  if (values.length) return values;
  const joined = m.get(name);
  return joined ? [joined] : [];
}

export function transportOf(protocol: string | undefined): TransportKind {
  const p = (protocol ?? "udp").toLowerCase();
  return p === "tcp" ? "tcp" : p === "tls" || p === "wss" ? "tls" : "udp";
}

export function peerOf(m: SrfMessage): Peer {
  return { address: m.source_address ?? "", port: m.source_port ?? 0, transport: transportOf(m.protocol) };
}

function bareUri(header: string | undefined): string {
  if (!header) return "";
  const inAngle = header.match(/<([^>]*)>/);
  return (inAngle ? inAngle[1] : header.split(";")[0]).trim();
}

export function incomingRequest(m: SrfMessage): IncomingRequest {
  return {
    method: m.method ?? "",
    ruri: m.uri ?? "",
    callId: m.get("Call-ID") ?? "",
    fromUri: bareUri(m.get("From")),
    toUri: bareUri(m.get("To")),
    header: (name) => headerValues(m, name)[0],
    body: m.body ? { contentType: m.get("Content-Type") ?? "", content: m.body } : undefined,
    source: peerOf(m),
  };
}

export function responseInfo(m: SrfMessage): ResponseInfo {
  return {
    status: m.status ?? 0,
    reason: m.reason ?? "",
    header: (name) => headerValues(m, name)[0],
    body: m.body ? { contentType: m.get("Content-Type") ?? "", content: m.body } : undefined,
    source: m.source_address ? peerOf(m) : undefined,
  };
}

export function failure(m: SrfMessage | undefined, status: number, what: string): TeleportError {
  const warning = m ? headerValues(m, "Warning")[0] : undefined;
  return new TeleportError(status, `${what}: ${status} ${m?.reason ?? ""}`.trim(), warning ? [warning] : []);
}

/**
 * Headers for srf, whose message builder writes one `name: value` line per key: a list is joined
 * with CRLF + name so the server still sees one header line per value (one challenge per line).
 */
export function srfHeaders(headers: Record<string, string | string[]> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers ?? {})) {
    const values = (Array.isArray(v) ? v : [v]).map((x) => x.replace(/[\r\n]+/g, " "));
    out[k] = values.join(`\r\n${k}: `);
  }
  return out;
}

/** `Warning: 399 host "text"` (RFC 3261 20.43), quotes and line breaks made safe. */
export function warningValue(host: string, text: string): string {
  return `399 ${host} "${text.replace(/["\\]/g, "'").replace(/[\r\n]+/g, " ")}"`;
}
