/** REGISTER of our AOR with the configured registrar, refreshed ahead of expiry, and its removal. */
import crypto from "node:crypto";
import type { UserAgentContext } from "./context";
import { failure, parseUri } from "./messages";

export class Registration {
  private state?: { callId: string; cseq: number; timer?: NodeJS.Timeout };

  constructor(private readonly ua: UserAgentContext) {}

  register(): Promise<void> {
    this.state ??= { callId: crypto.randomBytes(10).toString("hex"), cseq: 1 };
    return this.send(this.ua.config.registerExpires ?? 600);
  }

  async unregister(): Promise<void> {
    if (!this.state) return;
    if (this.state.timer) clearTimeout(this.state.timer);
    await this.send(0);
    this.state = undefined;
  }

  /** Stops refreshing (the user agent is stopping); the registrar lets the binding expire. */
  stop(): void {
    if (this.state?.timer) clearTimeout(this.state.timer);
  }

  private send(expires: number): Promise<void> {
    const reg = this.state;
    if (!reg) return Promise.resolve();
    const ua = this.ua;
    const registrar = parseUri(ua.config.registrar ?? `sip:${ua.aorUri.host}`);
    const msg = ua
      .requireCore()
      .makeOutgoingRequestMessage("REGISTER", registrar, ua.aorUri, ua.aorUri, { callId: reg.callId, cseq: reg.cseq }, [
        `Contact: ${ua.contactHeader()};expires=${expires}`,
        `Expires: ${expires}`,
      ]);
    return new Promise((resolve, reject) => {
      ua.requireCore().register(msg, {
        onAccept: (r) => {
          reg.cseq = msg.cseq + 1; // digest retries bumped the CSeq on the message
          if (expires > 0) {
            const granted = Number(
              r.message.getHeader("expires") ??
                /expires=(\d+)/i.exec(r.message.getHeader("contact") ?? "")?.[1] ??
                expires,
            );
            // Refresh ahead of expiry (RFC 3261 10.2.4), at least every few seconds apart.
            reg.timer = setTimeout(
              () => {
                this.send(expires).catch((err: unknown) =>
                  ua.logger.warn("sip registration refresh failed", { error: String(err) }),
                );
              },
              Math.max(2, granted * 0.8) * 1000,
            );
            reg.timer.unref();
          }
          resolve();
        },
        onReject: (r) => {
          reg.cseq = msg.cseq + 1;
          reject(failure(r.message, `REGISTER at ${registrar.toString()} failed`));
        },
      });
    });
  }
}
