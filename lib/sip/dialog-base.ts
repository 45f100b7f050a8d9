/**
 * What every backend's Dialog does the same way: keep the agent's INFO, BYE and termination
 * handlers, hand an incoming INFO or BYE to its handler (200 without one, 500 when it throws
 * before answering), and end once, telling every termination handler why.
 */
import type { Logger } from "../log/logger";
import type { IncomingRequest, Responder, ResponseOptions } from "./backend";

type RequestHandler = (req: IncomingRequest, res: Responder) => void;
type Send = (status: number, reason?: string, opts?: ResponseOptions) => void;

export abstract class DialogBase {
  private infoHandler?: RequestHandler;
  private byeHandler?: RequestHandler;
  private readonly terminatedHandlers: Array<(reason: string) => void> = [];
  /** Why the dialog ended, once it has. */
  protected ended?: string;
  /** The agent's check of this dialog's incoming INFO and BYE (Dialog.vetRequests). */
  protected vetter?: (req: IncomingRequest) => string | undefined;

  constructor(protected readonly logger: Logger) {}

  onInfo(handler: RequestHandler): void {
    this.infoHandler = handler;
  }

  onBye(handler: RequestHandler): void {
    this.byeHandler = handler;
  }

  vetRequests(check: (req: IncomingRequest) => string | undefined): void {
    this.vetter = check;
  }

  /** The vetter's reason to refuse `req`, if any (a throwing vetter refuses). */
  refusal(req: IncomingRequest): string | undefined {
    if (!this.vetter) return undefined;
    try {
      return this.vetter(req);
    } catch (err) {
      this.logger.warn("in-dialog vetting failed", { error: String(err) });
      return "the request could not be vetted";
    }
  }

  onTerminated(handler: (reason: string) => void): void {
    if (this.ended) handler(this.ended);
    else this.terminatedHandlers.push(handler);
  }

  /** Hands an INFO or BYE to the agent; `send` answers it on the backend. */
  protected dispatch(method: "INFO" | "BYE", req: IncomingRequest, send: Send): void {
    const handler = method === "INFO" ? this.infoHandler : this.byeHandler;
    if (!handler) return send(200);
    let answered = false;
    try {
      handler(req, {
        send: (status, reason, opts) => {
          answered = true;
          send(status, reason, opts);
        },
      });
    } catch (err) {
      this.logger.warn(`sip ${method} handler failed`, { error: String(err) });
      if (!answered) send(500);
    }
  }

  /** Ends the dialog once: `first` runs before the termination handlers hear `reason`. */
  protected end(reason: string, first?: () => void): void {
    if (this.ended) return;
    this.ended = reason;
    first?.();
    for (const h of this.terminatedHandlers.splice(0)) h(reason);
  }
}
