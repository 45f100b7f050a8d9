/** Translation between the seam's plain types (backend.ts) and sip.js core messages and options. */
import { Core, Grammar, type URI } from "sip.js";
import { TeleportError } from "../../errors";
import type { IncomingRequest, Peer, ResponseInfo, ResponseOptions, SipBody } from "../backend";
import { INFO_PACKAGE, NRDL_CONTENT_TYPE } from "../config";

const ALLOW = "INVITE, ACK, CANCEL, BYE, INFO, OPTIONS, MESSAGE";
/** Headers every dialog-forming request and answer carries. */
export const CAPABILITIES = [`Allow: ${ALLOW}`, `Accept: ${NRDL_CONTENT_TYPE}`, `Recv-Info: ${INFO_PACKAGE}`];

/** Where each request the core handles came from (set by the user agent as it parses). */
export type PeerMap = WeakMap<Core.IncomingRequestMessage | Core.IncomingResponseMessage, Peer>;

export type AnyIncomingResponse = { message: Core.IncomingResponseMessage };

export function parseUri(uri: string): URI {
  const parsed = Grammar.URIParse(uri.trim().replace(/^<|>$/g, ""));
  if (!parsed) throw new TeleportError(400, `not a SIP URI: ${uri}`);
  return parsed;
}

/** The outbound proxy as a preloaded Route: it must be a loose router (;lr). */
export function looseRoute(proxy: string): string {
  const uri = parseUri(proxy);
  uri.setParam("lr", undefined);
  return uri.toString();
}

export function mediaType(contentType: string | undefined): string {
  return (contentType ?? "").split(";")[0].trim().toLowerCase();
}

export function coreBody(body: SipBody, disposition: string): Core.Body {
  return { contentDisposition: disposition, contentType: body.contentType, content: body.content };
}

export function headerLines(headers: Record<string, string | string[]> | undefined): string[] {
  return Object.entries(headers ?? {}).flatMap(([k, v]) =>
    (Array.isArray(v) ? v : [v]).map((x) => `${k}: ${x.replace(/[\r\n]+/g, " ")}`),
  );
}

export function responseInfo(message: Core.IncomingResponseMessage, peers?: PeerMap): ResponseInfo {
  return {
    status: message.statusCode ?? 0,
    reason: message.reasonPhrase ?? "",
    header: (name) => message.getHeader(name),
    body: message.body ? { contentType: message.getHeader("content-type") ?? "", content: message.body } : undefined,
    source: peers?.get(message),
  };
}

/** `transportError`: why our request never left (the core reports only a bare 503 then). */
export function failure(message: Core.IncomingResponseMessage, what: string, transportError?: string): TeleportError {
  const warning = message.getHeader("warning") ?? (message.statusCode === 503 ? transportError : undefined);
  return new TeleportError(
    message.statusCode ?? 500,
    `${what}: ${message.statusCode} ${message.reasonPhrase}`,
    warning ? [warning] : [],
  );
}

/** Builds a core response from the seam's (status, reason, opts). */
export function responseOptions(
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

export function answer(
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

/** `Warning: 399 host "text"` (RFC 3261 20.43), quotes and line breaks made safe. */
export function warning(host: string, text: string): string {
  return `Warning: 399 ${host} "${text.replace(/["\\]/g, "'").replace(/[\r\n]+/g, " ")}"`;
}

/** One seam object per core message: what SipHandlers.admit was shown is what onInvite gets. */
const seamRequests = new WeakMap<Core.IncomingRequestMessage, IncomingRequest>();

export function incomingRequest(msg: Core.IncomingRequestMessage, peers: PeerMap): IncomingRequest {
  const known = seamRequests.get(msg);
  if (known) return known;
  const req: IncomingRequest = {
    method: msg.method,
    ruri: msg.ruri?.toString() ?? "",
    callId: msg.callId,
    fromUri: msg.from.uri.toString(),
    toUri: msg.to.uri.toString(),
    header: (name) => msg.getHeader(name),
    body: msg.body ? { contentType: msg.getHeader("content-type") ?? "", content: msg.body } : undefined,
    source: peers.get(msg) ?? { address: "", port: 0, transport: "udp" },
  };
  seamRequests.set(msg, req);
  return req;
}
