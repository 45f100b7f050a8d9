/** A confirmed INVITE dialog (either side) on the core's Session: INFO, BYE, ACK wait, in-dialog CSeq. */
import { Core } from "sip.js";
import { TeleportError } from "../../errors";
import type { Logger } from "../../log/logger";
import type { Dialog, IncomingRequest, ResponseInfo, ResponseOptions, Responder, SipBody } from "../backend";
import { INFO_PACKAGE } from "../config";
import {
  answer,
  coreBody,
  failure,
  incomingRequest,
  responseInfo,
  type AnyIncomingResponse,
  type PeerMap,
} from "./messages";

export class CoreDialog implements Dialog {
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
    private readonly peers: PeerMap,
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
