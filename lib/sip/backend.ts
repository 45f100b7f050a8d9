/**
 * The seam between the agents and a SIP stack. The agents speak in drachtio-srf's style
 * (`onInvite(req, res)`); a backend (sip.js core on our Node transports today, drachtio
 * tomorrow) implements this interface in one file.
 */
import type { TeleportError } from "../errors";

export type TransportKind = "udp" | "tcp" | "tls";

export interface SipBody {
  contentType: string;
  content: string;
}

export interface Peer {
  address: string;
  port: number;
  transport: TransportKind;
  /** TLS only: the peer's certificate, present only when it was verified against our CA(s). */
  certificate?: VerifiedCertificate;
}

/** A peer certificate that chained to a CA we trust; `sipUris` are its subjectAltName URI entries (sip:, sips:). */
export interface VerifiedCertificate {
  subject: string;
  sipUris: string[];
}

/** A request as the agents see it: the parts they act on, nothing of the stack's internals. */
export interface IncomingRequest {
  method: string;
  ruri: string;
  callId: string;
  /** From and To header values (URIs with display names and tags stripped). */
  fromUri: string;
  toUri: string;
  header(name: string): string | undefined;
  body?: SipBody;
  /** Where the request came from on the network (after received/rport). */
  source: Peer;
}

export interface ResponseInfo {
  status: number;
  reason: string;
  header(name: string): string | undefined;
  body?: SipBody;
  /** Where the response came from on the network, when the stack says. */
  source?: Peer;
}

export interface ResponseOptions {
  /** A list gives the header several times (e.g. one WWW-Authenticate per digest algorithm). */
  headers?: Record<string, string | string[]>;
  body?: SipBody;
}

/** Answers a non-INVITE request (INFO, BYE, MESSAGE, OPTIONS). */
export interface Responder {
  send(status: number, reason?: string, opts?: ResponseOptions): void;
}

/** An established dialog, either side. */
export interface Dialog {
  readonly id: string;
  readonly callId: string;
  /** The remote party's URI. */
  readonly remoteUri: string;
  /** In-dialog INFO (Info-Package sip-teleport-status, body NRDL status); rejects with a TeleportError on a non-2xx. */
  info(body: SipBody): Promise<ResponseInfo>;
  /**
   * Ends the dialog; resolves with the 2xx to BYE (its body carries the peer's report), rejects with a TeleportError
   * otherwise.
   */
  bye(body?: SipBody): Promise<ResponseInfo>;
  onInfo(handler: (req: IncomingRequest, res: Responder) => void): void;
  /** The peer sent BYE: answer it through `res` (with a report body). */
  onBye(handler: (req: IncomingRequest, res: Responder) => void): void;
  /** The dialog ended for any reason (BYE either way, transport error, timeout). */
  onTerminated(handler: (reason: string) => void): void;
  /**
   * Vets every later INFO and BYE of this dialog before it is handled: a reason refuses it with
   * 403 (stateless on sip.js) and leaves the dialog as it was. One check per dialog; a new one replaces it.
   */
  vetRequests(check: (req: IncomingRequest) => string | undefined): void;
}

/** The UAS side of an INVITE before it is answered. */
export interface InviteResponder {
  /** 180/183 with an optional body. 100 Trying is sent by the backend itself. */
  progress(status: 180 | 183, reason?: string): void;
  /**
   * Final non-2xx (status from the error), with an optional body and extra headers (Warning is added from the reason).
   */
  reject(error: TeleportError, opts?: ResponseOptions): void;
  /** 3xx (302 by default) sending the caller to another destination (the thesis' redirected call). */
  redirect(target: string, status?: 300 | 301 | 302 | 305 | 380): void;
  /** 200 OK with the answer; the dialog is returned at once and `acked` settles on ACK (or rejects on Timer H). */
  accept(body: SipBody, opts?: ResponseOptions): { dialog: Dialog; acked: Promise<void> };
  /** The caller sent CANCEL before we answered (the backend has already replied 487). */
  onCancel(handler: () => void): void;
}

export interface OutgoingInviteOptions {
  /** Extra headers (e.g. Subject, Session-Expires). */
  headers?: Record<string, string>;
  /** Called on each provisional response. */
  onProgress?: (res: ResponseInfo) => void;
  /**
   * Give up when no final answer came within this many ms: CANCEL, and `established` rejects
   * with 408. Once a 100 Trying arrived, RFC 3261's Timer B no longer runs, so without it a UAC
   * waits forever for a peer that crashed after answering 100. A late 200 is ACKed and hung up.
   */
  answerTimeoutMs?: number;
  /** Vets each 3xx Contact before it is followed: a reason refuses it (the INVITE fails with 403). */
  redirectAllowed?: (target: string) => string | undefined;
}

/** The UAC side of an INVITE. */
export interface OutgoingInvite {
  /**
   * Resolves on 2xx (after ACK is sent) with the dialog, the answer and the URI that answered (after redirects);
   * rejects with a TeleportError on a final failure.
   */
  readonly established: Promise<{ dialog: Dialog; response: ResponseInfo; target: string }>;
  /** CANCEL while no final response has arrived. */
  cancel(): void;
}

/** One SIP message as it crossed the wire (text already masked): for ladders and consoles. */
export interface TraceEvent {
  direction: "sent" | "received";
  message: string;
  /** ms since the epoch */
  at: number;
  peer?: Peer;
}

/** A refusal decided before a request reaches its dialog (e.g. 401 with a digest challenge). */
export interface RequestRefusal {
  error: TeleportError;
  headers?: Record<string, string | string[]>;
}

export interface SipHandlers {
  /**
   * Vets a new INVITE or MESSAGE (outside a dialog) before the backend keeps anything of it. The
   * sip.js backend answers a refusal once, statelessly (RFC 3261 8.2, 17.2.1: no transaction, no
   * Timer G), so a stranger's request costs one response; drachtio-server answers it in its own
   * transaction. An admitted request reaches onInvite/onMessage as the same `req` object.
   */
  admit?(req: IncomingRequest): RequestRefusal | undefined;
  onInvite?(req: IncomingRequest, res: InviteResponder): void;
  onMessage?(req: IncomingRequest, res: Responder): void;
  /**
   * OPTIONS outside a dialog (capacity queries, dry runs). The backend adds Allow, Accept and
   * Recv-Info to whatever is sent; without a handler it answers 200 with just those.
   */
  onOptions?(req: IncomingRequest, res: Responder): void;
  /**
   * Vets every in-dialog request (INFO, BYE; not ACK or CANCEL) before its dialog sees it. A
   * refusal is answered statelessly and leaves the dialog untouched, so a challenged BYE can be
   * retried with credentials (the sip.js core ends a dialog on any BYE it hands to the dialog).
   */
  authorize?(req: IncomingRequest): RequestRefusal | undefined;
}

export interface SipBackend {
  /** Our address of record, e.g. sip:dc2@127.0.0.1. */
  readonly aor: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  setHandlers(handlers: SipHandlers): void;
  /** Observe every message sent and received (masked), whether or not --sip-trace logs them. */
  onTrace(handler: (e: TraceEvent) => void): () => void;
  invite(target: string, body: SipBody, opts?: OutgoingInviteOptions): OutgoingInvite;
  message(target: string, body: SipBody): Promise<ResponseInfo>;
  /** OPTIONS to a peer or proxy (health check); resolves with its 2xx. */
  options(target: string): Promise<ResponseInfo>;
  /**
   * OPTIONS asking for NRDL (Accept: application/nrdl+xml), with an offer as body for a dry run or
   * none for a capacity query; resolves with the final response whatever its status (a dry run's
   * 488 carries the verdict in its body). Digest challenges are answered like an INVITE's.
   */
  query(target: string, body?: SipBody): Promise<ResponseInfo>;
  /** REGISTER our AOR with the configured registrar (and keep refreshing it). */
  register(): Promise<void>;
  unregister(): Promise<void>;
}
