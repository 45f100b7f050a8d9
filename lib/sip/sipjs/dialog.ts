/** A confirmed INVITE dialog (either side) on the core's Session: INFO, BYE, ACK wait, in-dialog CSeq. */
import { Core } from "sip.js";
import { TeleportError } from "../../errors";
import type { Dialog, ResponseInfo, ResponseOptions, SipBody } from "../backend";
import { DialogBase } from "../dialog-base";
import { INFO_PACKAGE } from "../config";
import type { UserAgentContext } from "./context";
import {
  answer,
  coreBody,
  failure,
  incomingRequest,
  responseInfo,
  type AnyIncomingResponse,
  type PeerMap,
} from "./messages";

export class CoreDialog extends DialogBase implements Dialog {
  readonly id: string;
  readonly callId: string;
  readonly remoteUri: string;
  private ack?: { resolve: () => void; reject: (err: TeleportError) => void };

  private readonly peers: PeerMap;

  constructor(
    private readonly session: Core.Session,
    private readonly ua: UserAgentContext,
  ) {
    super(ua.logger);
    this.peers = ua.peers;
    this.id = session.id;
    ua.dialogs.set(session.id, this);
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
            resolve(responseInfo(r.message, this.peers));
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
        if (ok) resolve(responseInfo(r.message, this.peers));
        else reject(failure(r.message, "BYE failed"));
      };
      this.session.bye(
        { onAccept: (r) => done(r, true), onReject: (r) => done(r, false) },
        body ? { extraHeaders: ["Content-Disposition: render"], body: coreBody(body, "render") } : undefined,
      );
    });
  }

  private receiveInfo(uas: Core.IncomingRequest): void {
    const pkg = (uas.message.getHeader("info-package") ?? "").split(";")[0].trim().toLowerCase();
    if (pkg !== INFO_PACKAGE) {
      uas.reject({ statusCode: 469, extraHeaders: [`Recv-Info: ${INFO_PACKAGE}`] });
      return;
    }
    this.dispatch("INFO", incomingRequest(uas.message, this.peers), (status, reason, opts) =>
      answer(uas, status, reason, opts),
    );
  }

  private receiveBye(uas: Core.IncomingRequest): void {
    const req = incomingRequest(uas.message, this.peers);
    const respond = (status: number, reason?: string, opts?: ResponseOptions): void => {
      answer(uas, status, reason, opts);
      this.terminate("BYE received");
    };
    this.dispatch("BYE", req, respond);
  }

  private terminate(reason: string): void {
    this.end(reason, () => {
      this.ua.dialogs.delete(this.id);
      this.ack?.reject(new TeleportError(481, `dialog ended before ACK (${reason})`));
    });
  }
}
