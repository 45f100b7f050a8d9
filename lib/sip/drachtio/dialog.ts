/**
 * The seam's Dialog on a drachtio-srf Dialog. srf answers an incoming BYE with a bare 200 in
 * `Dialog.handle`; we replace `handle` on our own dialog objects for BYE and INFO so the agent
 * answers them (the destination's report travels in the 200 to BYE, as with sip.js). In-dialog
 * requests go through the srf agent directly so the text that was sent can be traced.
 */
import { TeleportError } from "../../errors";
import type { Logger } from "../../log/logger";
import type { Dialog, IncomingRequest, ResponseInfo, ResponseOptions, SipBody } from "../backend";
import { DialogBase } from "../dialog-base";
import { INFO_PACKAGE, type SipCredentials } from "../config";
import { answerChallenges } from "../digest";
import {
  failure,
  headerValues,
  incomingRequest,
  ownDialog,
  srfDefault,
  responseInfo,
  warningValue,
  type SrfApi,
  type SrfDialog,
  type SrfIncomingRequest,
  type SrfMessage,
  type SrfResponse,
} from "./srf";

export type Tracer = (direction: "sent" | "received", m: SrfMessage) => void;

/** What a dialog needs from its backend. */
export interface DialogContext {
  srf: SrfApi;
  trace: Tracer;
  logger: Logger;
  credentials?: SipCredentials;
  /** Vets in-dialog INFO/BYE (the agent's authorize hook). */
  authorize(req: IncomingRequest): { status: number; reason: string; headers: Record<string, string> } | undefined;
  /** Sends a response and traces it. */
  respond(res: SrfResponse, status: number, reason?: string, opts?: ResponseOptions): void;
  forget(dialog: DrachtioDialog): void;
}

interface AgentLike {
  request(
    opts: { method: string; stackDialogId: string; headers: Record<string, string>; body?: string; _socket: unknown },
    cb: (err: unknown, req?: SrfMessage & { on(e: "response", cb: (res: SrfMessage) => void): void }) => void,
  ): void;
}

export class DrachtioDialog extends DialogBase implements Dialog {
  readonly id: string;
  readonly callId: string;
  readonly remoteUri: string;
  private nc = 0;

  constructor(
    private readonly d: SrfDialog,
    private readonly ctx: DialogContext,
  ) {
    super(ctx.logger);
    this.id = d.id;
    this.callId = d.sip.callId;
    this.remoteUri = d.remote.uri;
    d.on("destroy", () => this.terminate("dialog destroyed by drachtio"));
    ownDialog(d, (req, res) => {
      if (req.method === "BYE") return this.receiveBye(req, res);
      if (req.method === "INFO") return this.receiveInfo(req, res);
      if (req.method === "ACK") ctx.trace("received", req);
      srfDefault(d, req, res);
    });
  }

  /** Resolves on the ACK to our 200 (UAS side). */
  acked(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new TeleportError(408, "no ACK for our 200 OK (Timer H)"));
        this.bye().catch(() => undefined);
      }, timeoutMs);
      this.d.on("ack", () => {
        clearTimeout(timer);
        resolve();
      });
      this.onTerminated((reason) => {
        clearTimeout(timer);
        reject(new TeleportError(481, `dialog ended before ACK (${reason})`));
      });
    });
  }

  /** One in-dialog request, answering a digest challenge once. */
  private async send(method: string, headers: Record<string, string>, body?: string): Promise<SrfMessage> {
    if (this.ended) throw new TeleportError(481, `dialog already ended (${this.ended})`);
    let res = await this.sendOnce(method, headers, body);
    const creds = this.ctx.credentials;
    if ((res.status === 401 || res.status === 407) && creds) {
      const challenge = headerValues(res, res.status === 401 ? "WWW-Authenticate" : "Proxy-Authenticate");
      const auth = answerChallenges(challenge, method, this.remoteUri, creds, ++this.nc);
      if (auth)
        res = await this.sendOnce(method, {
          ...headers,
          [res.status === 401 ? "Authorization" : "Proxy-Authorization"]: auth,
        });
    }
    return res;
  }

  private sendOnce(method: string, headers: Record<string, string>, body?: string): Promise<SrfMessage> {
    const agent = (this.d as unknown as { agent: AgentLike }).agent;
    const socket = (this.d as unknown as { socket: unknown }).socket;
    return new Promise((resolve, reject) => {
      try {
        agent.request({ method, stackDialogId: this.id, headers, body, _socket: socket }, (err, req) => {
          if (err || !req) return reject(new TeleportError(503, `${method} not sent: ${String(err)}`));
          this.ctx.trace("sent", req);
          req.on("response", (res) => {
            this.ctx.trace("received", res);
            resolve(res);
          });
        });
      } catch (err) {
        reject(new TeleportError(503, `${method} not sent: ${String(err)}`));
      }
    });
  }

  async info(body: SipBody): Promise<ResponseInfo> {
    const headers = {
      "Info-Package": INFO_PACKAGE,
      "Content-Disposition": "Info-Package",
      "Content-Type": body.contentType,
    };
    const res = await this.send("INFO", headers, body.content);
    const status = res.status ?? 500;
    if (status >= 300) {
      if (status === 408 || status === 481) this.terminate(`INFO got ${status}`);
      throw failure(res, status, "INFO failed");
    }
    return responseInfo(res);
  }

  async bye(body?: SipBody): Promise<ResponseInfo> {
    const headers: Record<string, string> = body
      ? { "Content-Type": body.contentType, "Content-Disposition": "render" }
      : {};
    try {
      const res = await this.send("BYE", headers, body?.content);
      const status = res.status ?? 500;
      if (status >= 300) throw failure(res, status, "BYE failed");
      return responseInfo(res);
    } finally {
      this.terminate("BYE sent");
    }
  }

  private receiveInfo(req: SrfIncomingRequest, res: SrfResponse): void {
    this.ctx.trace("received", req);
    const seam = incomingRequest(req);
    if (this.refusedOwn(seam, res)) return;
    const refusal = this.ctx.authorize(seam);
    if (refusal) return this.ctx.respond(res, refusal.status, refusal.reason, { headers: refusal.headers });
    const pkg = (req.get("Info-Package") ?? "").split(";")[0].trim().toLowerCase();
    if (pkg !== INFO_PACKAGE) return this.ctx.respond(res, 469, undefined, { headers: { "Recv-Info": INFO_PACKAGE } });
    this.dispatch("INFO", seam, (status, reason, opts) => this.ctx.respond(res, status, reason, opts));
  }

  /**
   * drachtio-server has already dropped the dialog when a BYE reaches us, so a refused BYE still
   * ends it: we answer the refusal (the caller learns why) and end our side too.
   */
  private receiveBye(req: SrfIncomingRequest, res: SrfResponse): void {
    this.ctx.trace("received", req);
    const seam = incomingRequest(req);
    this.d.connected = false;
    this.ctx.srf.removeDialog(this.d);
    if (this.refusedOwn(seam, res)) return this.terminate("BYE refused with 403 (drachtio-server dropped the dialog)");
    const respond = (status: number, reason?: string, opts?: ResponseOptions): void => {
      this.ctx.respond(res, status, reason, opts);
      this.terminate(status < 300 ? "BYE received" : `BYE refused with ${status}`);
    };
    const refusal = this.ctx.authorize(seam);
    if (refusal && !(refusal.status === 401 && this.fromOpener(req)))
      return respond(refusal.status, refusal.reason, { headers: refusal.headers });
    if (refusal)
      this.ctx.logger.info("BYE accepted without digest: drachtio cannot take a challenged BYE's retry", {
        callId: this.callId,
        from: `${req.source_address}:${req.source_port}/${req.protocol}`,
      });
    this.dispatch("BYE", seam, respond);
  }

  /** This dialog's own vetting (Dialog.vetRequests): true when `req` was refused with 403. */
  private refusedOwn(req: IncomingRequest, res: SrfResponse): boolean {
    const why = this.refusal(req);
    if (!why) return false;
    this.ctx.logger.warn("in-dialog request refused", { method: req.method, callId: this.callId, reason: why });
    const host = req.ruri.replace(/^sips?:([^@]*@)?/, "").split(/[;:>?]/)[0] || "sip-teleport";
    this.ctx.respond(res, 403, "Forbidden", { headers: { Warning: warningValue(host, why) } });
    return true;
  }

  /**
   * Whether a request comes from where the dialog's INVITE came from (same address, port and
   * transport): the stand-in for a BYE digest that drachtio-server cannot let us challenge.
   */
  private fromOpener(req: SrfMessage): boolean {
    const invite = (this.d as unknown as { type?: string; req?: SrfMessage }).req;
    if ((this.d as unknown as { type?: string }).type !== "uas" || !invite) return false;
    return (
      invite.source_address === req.source_address &&
      invite.source_port === req.source_port &&
      invite.protocol === req.protocol
    );
  }

  /** Ends our side without signalling (drachtio-server gone, or the dialog already over there). */
  terminate(reason: string): void {
    this.end(reason, () => this.ctx.forget(this));
  }
}
