/** The UAS side: NRDL-only INVITEs (415/400 otherwise) with CANCEL, MESSAGE, and in-dialog vetting. */
import type { Core } from "sip.js";
import { TeleportError } from "../../errors";
import type { InviteResponder, ResponseOptions } from "../backend";
import { INFO_PACKAGE, NRDL_CONTENT_TYPE } from "../config";
import type { UserAgentContext } from "./context";
import { CoreDialog } from "./dialog";
import {
  answer,
  CAPABILITIES,
  headerLines,
  incomingRequest,
  mediaType,
  parseUri,
  responseOptions,
  warning,
} from "./messages";
import { NOT_A_PHONE, NOT_A_PHONE_REASON } from "../not-a-phone";

/**
 * Runs the agent's `admit` on a new INVITE or MESSAGE; on an in-dialog request the dialog's own
 * vetting, then the agent's `authorize`. True when it was refused (answered once, statelessly: the
 * core never sees the request, so the dialog is untouched).
 */
export function refusedStatelessly(ua: UserAgentContext, message: Core.IncomingRequestMessage): boolean {
  const req = incomingRequest(message, ua.peers);
  const handlers = ua.handlers();
  // the dialog's own check first: the core would end the dialog on any BYE it is handed
  const own = message.toTag
    ? ua.dialogs.get(message.callId + (message.toTag ?? "") + (message.fromTag ?? ""))?.refusal(req)
    : undefined;
  const refusal = own
    ? { error: new TeleportError(403, "Forbidden", [own]) }
    : message.toTag
      ? handlers.authorize?.(req)
      : handlers.admit?.(req);
  if (!refusal) return false;
  if (own) ua.logger.warn("in-dialog request refused", { method: req.method, callId: req.callId, reason: own });
  const { error, headers } = refusal;
  const extraHeaders = [
    ...headerLines(headers),
    warning(message.ruri?.host ?? "sip-teleport", [error.reason, ...error.details].join("; ")),
  ];
  ua.replyStateless(message, { statusCode: error.status, reasonPhrase: error.reason, extraHeaders });
  return true;
}

/** Per UA, the OPTIONS being answered now, by Call-ID, CSeq and Via branch. */
const optionsInProgress = new WeakMap<UserAgentContext, Set<string>>();

/**
 * OPTIONS outside a dialog, answered statelessly as the core would: by the agent's onOptions
 * (capacity, dry run) when it has one, else 200 with our capabilities (the core's own lists SDP).
 * A UDP retransmission that arrives while the first is still being answered (a dry run takes a
 * while on a busy host) is dropped, as a server transaction would (RFC 3261 17.2.2): a dry run
 * must not run twice, it counts against the caller's INVITE rate. Once answered, the UDP layer
 * replays the answer to retransmissions.
 */
export function receiveOptions(
  ua: UserAgentContext,
  core: Core.UserAgentCore,
  message: Core.IncomingRequestMessage,
): void {
  const busy = optionsInProgress.get(ua) ?? new Set<string>();
  optionsInProgress.set(ua, busy);
  const key = `${message.callId} ${message.cseq} ${message.viaBranch}`;
  if (busy.has(key)) return;
  busy.add(key);
  const reply = (status: number, reason?: string, opts?: ResponseOptions) => {
    busy.delete(key);
    const options = responseOptions(status, reason, opts, "render");
    options.extraHeaders = [...CAPABILITIES, "Supported: ", ...(options.extraHeaders ?? [])];
    core.replyStateless(message, options);
  };
  const onOptions = ua.handlers().onOptions;
  if (onOptions) onOptions(incomingRequest(message, ua.peers), { send: reply });
  else reply(200);
}

export function receiveMessage(ua: UserAgentContext, uas: Core.IncomingRequest): void {
  const handler = ua.handlers().onMessage;
  if (!handler) return void uas.reject({ statusCode: 405 });
  handler(incomingRequest(uas.message, ua.peers), {
    send: (status, reason, opts) => answer(uas, status, reason, opts),
  });
}

export function receiveInvite(ua: UserAgentContext, uas: Core.IncomingInviteRequest): void {
  const msg = uas.message;
  uas.trying();
  const warnHost = msg.ruri?.host ?? "sip-teleport";
  const type = mediaType(msg.getHeader("content-type"));
  if (msg.body && type !== NRDL_CONTENT_TYPE) {
    // A softphone's call: refuse it without disturbing anything else, and say what works instead
    // (softphones show the reason phrase; the Warning has the whole sentence).
    uas.reject({
      statusCode: 415,
      reasonPhrase: NOT_A_PHONE_REASON,
      extraHeaders: [`Accept: ${NRDL_CONTENT_TYPE}`, warning(warnHost, NOT_A_PHONE)],
    });
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
  const handler = ua.handlers().onInvite;
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
      const dialog = new CoreDialog(session, ua);
      const acked = new Promise<void>((resolve, reject) => dialog.awaitAck(resolve, reject));
      acked.catch(() => undefined); // callers that ignore `acked` still see onTerminated
      return { dialog, acked };
    },
    onCancel: (h) => cancelHandlers.push(h),
  };
  try {
    handler(incomingRequest(msg, ua.peers), responder);
  } catch (err) {
    if (!answered) responder.reject(TeleportError.from(err));
    else throw err;
  }
}
