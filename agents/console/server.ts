/**
 * The console's HTTP side: the static page and the JSON API it (or any script) calls, with
 * live state pushed as server-sent events. Node's http module only; the routes are few.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join } from "node:path";
import { z } from "zod";
import { DestinationPolicy } from "../../lib/access/destinations";
import type { HostConfig } from "../../lib/config/schema";
import { TeleportError } from "../../lib/errors";
import type { Host } from "../../lib/hypervisor/host";
import type { Logger } from "../../lib/log/logger";
import { COMPRESS_CHOICES } from "../../lib/plan/compress";
import { DEDUP_CHOICES } from "../../lib/plan/dedup";
import { ON_ERROR, STRATEGIES } from "../../nrdl/types";
import type { MigrateRequest } from "../source/agent";
import type { Evacuation } from "../source/evacuate";
import { renderEvacuation } from "../source/evacuate-display";
import { ApiAuth } from "./auth";
import type { HistoryStore } from "./history";
import { namedPlan, planNames, policyOf } from "./plans";
import { ALLOWED, type ConsoleLine, type LineEvent } from "./session";

/** The page's files: next to this module in the sources, or found from dist/ back in the sources. */
function staticDir(): string {
  const candidates = [join(__dirname, "static"), join(__dirname, "..", "..", "..", "agents", "console", "static")];
  return candidates.find((d) => existsSync(join(d, "index.html"))) ?? candidates[0];
}

const MIME: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};
const MAX_BODY = 64 * 1024;
/** State events are coalesced to at most one per this many ms per client (progress arrives faster). */
const STATE_EVERY_MS = 100;

const callBody = z
  .object({
    to: z.string().regex(/^sips?:\S+$/, "expected a SIP URI such as sip:dc2@127.0.0.1"),
    vms: z.array(z.string().min(1)).optional(),
    plan: z.string().optional(),
    /** Stream reductions to offer (nrdl/SPEC.md 5.7); absent: the host's defaults.compress. */
    compress: z.enum(COMPRESS_CHOICES).optional(),
    /** Group page dedup to offer (nrdl/SPEC.md 5.8); absent: the host's defaults.dedup. */
    dedup: z.enum(DEDUP_CHOICES).optional(),
    policy: z
      .object({
        strategy: z.enum(STRATEGIES),
        maxParallel: z.number().int().min(1).max(64),
        bandwidthMbps: z.number().min(0),
        downtimeLimitMs: z.number().int().min(1),
        timeoutS: z.number().int().min(1),
        onError: z.enum(ON_ERROR),
      })
      .partial()
      .optional(),
  })
  .strict();

const evacuateBody = z
  .object({
    to: z
      .array(z.string().regex(/^sips?:\S+$/, "expected SIP URIs"))
      .min(1)
      .optional(),
  })
  .strict();

export interface ConsoleServerOptions {
  config: HostConfig;
  host: Host;
  line: ConsoleLine;
  /** Empties the host (the Evacuate button), with the console's source agent. */
  evacuation: Evacuation;
  history: HistoryStore;
  logger: Logger;
  /** "address:port"; port 0 picks a free one. */
  listen: string;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
  res.end(text);
}

/** An error as JSON: the SIP status and reason stay in the body; the HTTP status is the same when HTTP knows it. */
function sendError(res: ServerResponse, err: unknown): void {
  const e = TeleportError.from(err);
  const status = e.status >= 400 && e.status < 600 && STATUS_CODES[e.status] ? e.status : 502;
  send(res, status, { error: { status: e.status, reason: e.reason, details: e.details } });
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new TeleportError(413, "request body too large", [`at most ${MAX_BODY} bytes`]);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return text ? JSON.parse(text) : {};
  } catch (err) {
    throw new TeleportError(400, "request body is not JSON", [(err as Error).message]);
  }
}

/** A request body by its schema, or 400 with one line per problem. */
function parseBody<T>(schema: z.ZodType<T>, raw: unknown, what: string): T {
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  throw new TeleportError(
    400,
    what,
    parsed.error.issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`),
  );
}

export class ConsoleServer {
  private readonly server: Server;
  private readonly auth: ApiAuth;
  private readonly bindHost: string;
  private readonly bindPort: number;
  private readonly dir = staticDir();
  private readonly streams = new Set<ServerResponse>();
  private readonly destinations: DestinationPolicy;
  /** An evacuation is running: no second one, and no call on the line meanwhile. */
  private evacuating = false;

  constructor(private readonly opts: ConsoleServerOptions) {
    const m = /^\[?(.*?)\]?:(\d+)$/.exec(opts.listen);
    if (!m) throw new TeleportError(400, "invalid --http", [`expected address:port, got "${opts.listen}"`]);
    this.bindHost = m[1];
    this.bindPort = Number(m[2]);
    this.auth = new ApiAuth(this.bindHost, opts.config.console.token);
    this.destinations = new DestinationPolicy(opts.config.security.destinations);
    this.server = createServer((req, res) => void this.handle(req, res));
  }

  /** The token a client must send. */
  get token(): string {
    return this.auth.token;
  }

  get tokenGenerated(): boolean {
    return this.auth.generated;
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.bindPort, this.bindHost, () => resolve());
    });
    return this.url;
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    const host = a.family === "IPv6" ? `[${a.address}]` : a.address;
    return `http://${host}:${a.port}/`;
  }

  async stop(): Promise<void> {
    for (const s of this.streams) s.end();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://console.invalid");
    try {
      if (!url.pathname.startsWith("/api/")) return await this.serveStatic(req, url.pathname, res);
      const denied = this.auth.check(req, url);
      if (denied)
        return send(res, denied.status, { error: { status: denied.status, reason: denied.reason, details: [] } });
      await this.route(req, url, res);
    } catch (err) {
      const e = TeleportError.from(err);
      if (e.status >= 500) this.opts.logger.warn("console request failed", { path: url.pathname, error: e.message });
      if (!res.headersSent) sendError(res, e);
    }
  }

  private async route(req: IncomingMessage, url: URL, res: ServerResponse): Promise<void> {
    const { line, history, config } = this.opts;
    const route = `${req.method} ${url.pathname}`;
    const historyItem = /^GET \/api\/history\/([\w-]+)$/.exec(route);
    if (historyItem) return send(res, 200, await history.get(historyItem[1]));
    switch (route) {
      case "GET /api/inventory":
        return send(res, 200, { vms: await this.inventory() });
      case "GET /api/destinations":
        return send(res, 200, {
          destinations: config.console.destinations,
          plans: planNames(config),
          policy: policyOf(config),
          // the page's choices for a call's stream reductions, preset to this host's defaults
          reductions: {
            compress: { choices: COMPRESS_CHOICES, default: config.defaults.compress },
            dedup: { choices: DEDUP_CHOICES, default: config.defaults.dedup },
          },
          allowed: ALLOWED,
        });
      case "GET /api/state":
        return send(res, 200, line.snapshot());
      case "GET /api/history":
        return send(res, 200, { dialogs: await history.list() });
      case "GET /api/events":
        return this.events(req, res);
      case "POST /api/call":
        this.notEvacuating();
        return send(res, 200, await line.dial(this.callRequest(await readJson(req))));
      case "POST /api/evacuate":
        return send(res, 200, await this.evacuate(await readJson(req)));
      case "POST /api/dry-run":
        return send(res, 200, await line.dryRun(this.callRequest(await readJson(req))));
      case "POST /api/migrate":
        // Runs for as long as the VMs take: answer at once, progress follows on /api/events.
        line
          .migrate()
          .catch((err: unknown) => this.opts.logger.warn("plan failed", { error: TeleportError.from(err).message }));
        return send(res, 202, line.snapshot());
      case "POST /api/bye":
        return send(res, 200, await line.bye());
      case "POST /api/cancel":
        line.cancel();
        return send(res, 202, line.snapshot());
      case "POST /api/abort":
        line.abort();
        return send(res, 202, line.snapshot());
      default:
        throw new TeleportError(404, `no route ${route}`);
    }
  }

  private callRequest(raw: unknown): MigrateRequest {
    const { to, vms, plan, policy, compress, dedup } = parseBody(callBody, raw, "invalid call");
    const unlisted = this.destinations.check(to);
    if (unlisted) throw new TeleportError(403, "Forbidden", [unlisted]);
    if (plan) return { ...namedPlan(this.opts.config, this.opts.host, plan, to), compress, dedup };
    return { to, vms, policy: policyOf(this.opts.config, policy), compress, dedup };
  }

  private notEvacuating(): void {
    if (this.evacuating)
      throw new TeleportError(409, "the host is being evacuated", ["wait for the evacuation to end"]);
  }

  /**
   * Every VM running here to the given destinations (default: console.destinations), as
   * `sip-teleport evacuate` does; answers when it is over, with the report and its table.
   */
  private async evacuate(raw: unknown) {
    const { config, line, evacuation } = this.opts;
    const to = parseBody(evacuateBody, raw, "invalid evacuation").to ?? config.console.destinations;
    if (to.length === 0) throw new TeleportError(400, "no destinations", ["console.destinations is empty: give to"]);
    const unlisted = to.map((uri) => this.destinations.check(uri)).filter((u): u is string => u !== undefined);
    if (unlisted.length) throw new TeleportError(403, "Forbidden", unlisted);
    this.notEvacuating();
    if (!ALLOWED.call.includes(line.snapshot().phase))
      throw new TeleportError(409, "a migration is on the line", ["hang up (Bye) first"]);
    this.evacuating = true;
    try {
      const report = await evacuation.run({ destinations: to, policy: policyOf(config) });
      return { report, text: renderEvacuation(report) };
    } finally {
      this.evacuating = false;
    }
  }

  private async inventory() {
    return Promise.all(
      this.opts.host.inventory().map(async (def) => {
        const state = await this.opts.host
          .find(def.name)
          ?.driver.state(def.name)
          .catch(() => "unknown");
        return {
          name: def.name,
          role: def.role,
          memoryMib: def.memoryMib,
          cpus: def.cpus,
          hypervisor: def.hypervisor,
          state,
        };
      }),
    );
  }

  /** Server-sent events: the line's state (coalesced), and each history record as it is written. */
  private events(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
    const write = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    write("state", this.opts.line.snapshot());
    let timer: NodeJS.Timeout | undefined;
    let last = 0;
    const flushState = () => {
      timer = undefined;
      last = Date.now();
      write("state", this.opts.line.snapshot());
    };
    const onEvent = (e: LineEvent) => {
      if (e.type === "history") return write("history", { id: e.record.id });
      // Phase changes go out at once; a burst of progress is sent as its latest state.
      const due = STATE_EVERY_MS - (Date.now() - last);
      if (e.state.phase !== "migrating" || due <= 0) {
        if (timer) clearTimeout(timer);
        flushState();
      } else timer ??= setTimeout(flushState, due);
    };
    const unsubscribe = this.opts.line.subscribe(onEvent);
    const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), 15000);
    this.streams.add(res);
    req.on("close", () => {
      unsubscribe();
      clearInterval(keepAlive);
      if (timer) clearTimeout(timer);
      this.streams.delete(res);
    });
  }

  private async serveStatic(req: IncomingMessage, pathname: string, res: ServerResponse): Promise<void> {
    if (req.method !== "GET") throw new TeleportError(405, "Method Not Allowed");
    const name = pathname === "/" ? "index.html" : pathname.slice(1);
    // The page is a few flat files: anything else (../, subfolders) is not ours to serve.
    if (!/^[\w-]+\.(html|js|css|svg)$/.test(name)) throw new TeleportError(404, `no such file ${pathname}`);
    const body = await readFile(join(this.dir, name)).catch(() => {
      throw new TeleportError(404, `no such file ${pathname}`);
    });
    res.writeHead(200, {
      "content-type": MIME[extname(name)],
      "cache-control": "no-cache",
      "x-content-type-options": "nosniff",
    });
    res.end(body);
  }
}
