/** The UAC side: INVITE (answer timeout, 3xx following, forked 200s), MESSAGE and OPTIONS requests. */
import type { Core, URI } from "sip.js";
import { TeleportError } from "../../errors";
import type { Dialog, OutgoingInvite, OutgoingInviteOptions, ResponseInfo, SipBody } from "../backend";
import { NRDL_CONTENT_TYPE } from "../config";
import type { UserAgentContext } from "./context";
import { CoreDialog } from "./dialog";
import { CAPABILITIES, coreBody, failure, headerLines, parseUri, responseInfo } from "./messages";

const MAX_REDIRECTS = 5;

export function sendInvite(
  ua: UserAgentContext,
  target: string,
  body: SipBody,
  opts: OutgoingInviteOptions = {},
): OutgoingInvite {
  let current: Core.OutgoingInviteRequest | undefined;
  let cancelled = false;
  const established = new Promise<{ dialog: Dialog; response: ResponseInfo; target: string }>((resolve, reject) => {
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
                `no final answer to the INVITE within ${limit / 1000} s (the destination may have crashed ` +
                  `while arming); CANCEL sent, nothing was migrated`,
              ]),
            );
          }, limit);
    const done = () => clearTimeout(timer);
    const send = (uri: URI, hops: number): void => {
      const extra = [
        `Contact: ${ua.contactHeader()}`,
        "Content-Disposition: session",
        ...CAPABILITIES,
        ...headerLines(opts.headers),
      ];
      const message = ua
        .requireCore()
        .makeOutgoingRequestMessage("INVITE", uri, ua.aorUri, parseUri(target), {}, extra, coreBody(body, "session"));
      current = ua.requireCore().invite(message, {
        onProgress: (r) => opts.onProgress?.(responseInfo(r.message)),
        onAccept: (r) => {
          done();
          r.ack();
          if (settled) return void r.session.bye(); // a second fork answered: hang it up
          settled = true;
          resolve({
            dialog: new CoreDialog(r.session, ua),
            response: responseInfo(r.message, ua.peers),
            target: uri.toString(),
          });
        },
        onRedirect: (r) => {
          const contact = r.message.parseHeader("contact") as { uri?: URI } | undefined;
          const refused = contact?.uri && opts.redirectAllowed?.(contact.uri.toString());
          if (refused) {
            done();
            return reject(new TeleportError(403, "Redirect Refused", [refused]));
          }
          if (!cancelled && contact?.uri && hops < MAX_REDIRECTS) {
            ua.logger.info("sip invite redirected", {
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
          reject(failure(r.message, `INVITE ${uri.toString()} failed`, ua.sendError(message.callId)));
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

export function sendMessage(ua: UserAgentContext, target: string, body: SipBody): Promise<ResponseInfo> {
  const uri = parseUri(target);
  const msg = ua
    .requireCore()
    .makeOutgoingRequestMessage("MESSAGE", uri, ua.aorUri, uri, {}, [], coreBody(body, "render"));
  return new Promise((resolve, reject) => {
    ua.requireCore().message(msg, {
      onAccept: (r) => resolve(responseInfo(r.message)),
      onReject: (r) => reject(failure(r.message, `MESSAGE ${target} failed`)),
    });
  });
}

/** Sends OPTIONS (a health check of a peer or proxy); resolves with its 200. */
export function sendOptions(ua: UserAgentContext, target: string): Promise<ResponseInfo> {
  const uri = parseUri(target);
  const msg = ua
    .requireCore()
    .makeOutgoingRequestMessage("OPTIONS", uri, ua.aorUri, uri, {}, [`Accept: ${NRDL_CONTENT_TYPE}`]);
  return new Promise((resolve, reject) => {
    ua.requireCore().request(msg, {
      onAccept: (r) => resolve(responseInfo(r.message)),
      onReject: (r) => reject(failure(r.message, `OPTIONS ${target} failed`)),
    });
  });
}

/** OPTIONS asking for NRDL, with an offer (dry run) or without (capacity); resolves with any final response. */
export function sendQuery(ua: UserAgentContext, target: string, body?: SipBody): Promise<ResponseInfo> {
  const uri = parseUri(target);
  const msg = ua
    .requireCore()
    .makeOutgoingRequestMessage(
      "OPTIONS",
      uri,
      ua.aorUri,
      uri,
      {},
      [`Accept: ${NRDL_CONTENT_TYPE}`],
      body && coreBody(body, "render"),
    );
  return new Promise((resolve) => {
    ua.requireCore().request(msg, {
      onAccept: (r) => resolve(responseInfo(r.message)),
      onReject: (r) => resolve(responseInfo(r.message)),
    });
  });
}
