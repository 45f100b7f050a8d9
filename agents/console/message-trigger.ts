/**
 * SIP devices as triggers (RFC 3428): a MESSAGE "migrate exp2 to sip:dc2@10.10.10.67" from an
 * allowed sender runs the named plan on the console's line (so the page shows it live) and the
 * outcome goes back to the sender in a MESSAGE of its own. The sender goes through the INVITE's
 * own gate (lib/access/gate.ts: TLS when required, the rate limit, digest, allowlist on proven
 * identities), refused statelessly before any transaction, and the URI must be a permitted
 * destination. The MESSAGE itself is answered at once: 202 when the migration starts, or the reason
 * it will not.
 */
import type { HostConfig } from "../../lib/config/schema";
import { TeleportError } from "../../lib/errors";
import type { Host } from "../../lib/hypervisor/host";
import type { Logger } from "../../lib/log/logger";
import type { IncomingRequest, RequestRefusal, Responder, SipBackend } from "../../lib/sip/backend";
import { DestinationPolicy } from "../../lib/access/destinations";
import { CallerGate, loggedDetails, type Admitted } from "../../lib/access/gate";
import { bareUri } from "../../lib/access/uri";
import type { MigrateSummary } from "../source/agent";
import { namedPlan } from "./plans";
import { ALLOWED, type ConsoleLine } from "./session";

const COMMAND = /^\s*migrate\s+([\w.-]+)\s+to\s+(sips?:\S+)\s*$/i;

/** "completed mig-1a2b: router1 completed (downtime 31 ms), video completed (downtime 40 ms)" */
export function outcomeText(s: MigrateSummary): string {
  const vms = s.vms.map(
    (v) =>
      `${v.vm} ` +
      `${v.state}${v.downtimeMs !== undefined ? ` (downtime ${v.downtimeMs} ms)` : v.reason ? ` (${v.reason})` : ""}`,
  );
  return `${s.outcome} ${s.migrationId}: ${vms.join(", ")}`;
}

export function failureText(e: TeleportError): string {
  return `failed ${e.status} ${e.reason}${e.details.length ? `: ${e.details.join("; ")}` : ""}`;
}

/** Where to send the outcome: the sender's Contact when it gave one, else its From. */
function replyTarget(req: IncomingRequest): string {
  const contact = /<([^>]+)>/.exec(req.header("contact") ?? "")?.[1] ?? req.header("contact")?.split(";")[0];
  return contact?.trim() || req.fromUri;
}

export class MessageTrigger {
  private readonly gate: CallerGate;
  private readonly destinations: DestinationPolicy;
  /** MESSAGEs `admit` let in, for `handle` (the backend passes the same request object). */
  private readonly passes = new WeakMap<IncomingRequest, Admitted>();

  constructor(
    private readonly opts: { config: HostConfig; host: Host; sip: SipBackend; line: ConsoleLine; logger: Logger },
  ) {
    this.gate = new CallerGate(opts.config);
    this.destinations = new DestinationPolicy(opts.config.security.destinations);
  }

  /** SipHandlers.admit: the sender of a new MESSAGE through the gate; a refusal is sent once, statelessly. */
  admit(req: IncomingRequest): RequestRefusal | undefined {
    if (req.method !== "MESSAGE") return undefined;
    try {
      this.passes.set(req, this.gate.admit(req));
      return undefined;
    } catch (err) {
      const error = TeleportError.from(err);
      this.refused(req, error.status, loggedDetails(error).join("; "));
      return { error, headers: this.gate.headers(error) };
    }
  }

  private refused(req: IncomingRequest, status: number, why: string): void {
    this.opts.logger.warn("MESSAGE trigger refused", { from: req.fromUri, address: req.source.address, status, why });
  }

  handle(req: IncomingRequest, res: Responder): void {
    const refuse = (
      status: number,
      reason: string,
      why: string,
      headers: Record<string, string | string[]> = {},
      logged = why,
    ) => {
      this.refused(req, status, logged);
      res.send(status, reason, { headers: { ...headers, Warning: `399 sip-teleport "${why.replace(/"/g, "'")}"` } });
    };
    let admitted: Admitted;
    try {
      admitted = this.passes.get(req) ?? this.gate.admit(req);
    } catch (err) {
      const e = TeleportError.from(err);
      return refuse(e.status, e.reason, e.details.join("; "), this.gate.headers(e), loggedDetails(e).join("; "));
    }
    const type = (req.body?.contentType ?? "").split(";")[0].trim().toLowerCase();
    if (type !== "text/plain") return refuse(415, "Unsupported Media Type", "send text/plain: migrate PLAN to SIP-URI");
    const m = COMMAND.exec(req.body?.content ?? "");
    if (!m) return refuse(400, "Bad Request", "expected: migrate PLAN to SIP-URI");
    const [, name, to] = m;
    const unlisted = this.destinations.check(to);
    if (unlisted) return refuse(403, "Forbidden", unlisted);
    let request;
    try {
      request = namedPlan(this.opts.config, this.opts.host, name, to);
    } catch (err) {
      const e = TeleportError.from(err);
      return refuse(404, "Not Found", `${e.reason}; ${e.details.join("; ")}`);
    }
    if (!ALLOWED.call.includes(this.opts.line.snapshot().phase))
      return refuse(486, "Busy Here", "a migration is already on the line");
    res.send(202, "Accepted");
    // History names who proved it was them: the identity, else the allowed address (never the bare From).
    const sender = admitted.identities[0]?.uri ?? `${req.source.address} (From ${bareUri(req.fromUri)}, unproven)`;
    this.opts.logger.info("MESSAGE trigger", { from: sender, plan: name, to });
    void this.run(request, sender, replyTarget(req));
  }

  private async run(request: ReturnType<typeof namedPlan>, sender: string, replyTo: string): Promise<void> {
    const { line } = this.opts;
    let text: string;
    try {
      await line.dial(request, sender);
      await line.migrate();
      text = outcomeText(await line.bye());
    } catch (err) {
      text = failureText(TeleportError.from(err));
    }
    try {
      await this.opts.sip.message(replyTo, { contentType: "text/plain", content: text });
    } catch (err) {
      this.opts.logger.warn("could not send the outcome MESSAGE", {
        to: replyTo,
        error: TeleportError.from(err).message,
      });
    }
  }
}
