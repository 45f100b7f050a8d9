/** What the UAC, UAS and registration parts need from the user agent (sipjs-backend.ts) that owns them. */
import type { Core, URI } from "sip.js";
import type { Logger } from "../../log/logger";
import type { IncomingRequest, SipHandlers } from "../backend";
import type { SipConfig } from "../config";
import type { PeerMap } from "./messages";

export interface UserAgentContext {
  readonly aorUri: URI;
  readonly config: SipConfig;
  readonly logger: Logger;
  readonly peers: PeerMap;
  /** Open dialogs by the core's dialog id (Call-ID + local tag + remote tag), for their own vetting. */
  readonly dialogs: Map<string, { refusal(req: IncomingRequest): string | undefined }>;
  /** The agent's current handlers (setHandlers may replace them at any time). */
  handlers(): SipHandlers;
  /** The started core; throws 500 before start() or after stop(). */
  requireCore(): Core.UserAgentCore;
  /** Our Contact header value; the transport fills in the real host. */
  contactHeader(): string;
  /** Why the transport could not send the request of this Call-ID, if it could not. */
  sendError(callId: string): string | undefined;
  /** Answers a request once, without a transaction, retransmission or cached copy (a stateless refusal). */
  replyStateless(message: Core.IncomingRequestMessage, options: Core.ResponseOptions): void;
}
