/**
 * A small QMP client: JSON lines over a Unix socket. QEMU greets first, then waits for
 * `qmp_capabilities`; after that every command carries an id and its reply carries it back,
 * while asynchronous events (MIGRATION, RESUME, STOP, ...) arrive in between without one.
 * No npm QMP client is well kept enough to depend on, and the protocol is this small.
 */
import net from "node:net";
import { TeleportError } from "../errors";

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

/** A command QEMU answered with an error (its class, e.g. GenericError, CommandNotFound, stays available). */
export class QmpCommandError extends TeleportError {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(500, `QMP ${command} failed: ${desc}`, [`QEMU error class ${errorClass}`]);
    this.name = "QmpCommandError";
  }
}

export interface QmpConnectOptions {
  /** How long to wait for the socket and the greeting; a monitor another client holds never greets. */
  timeoutMs?: number;
  /**
   * Negotiate out-of-band execution (executeOob): commands QEMU runs on the monitor's own thread,
   * without the lock a vCPU may hold while it waits for a post-copy page that cannot come.
   */
  oob?: boolean;
  /**
   * Called once `qmp_capabilities` is sent, before its reply: commands executed here go out right
   * behind it and QEMU runs them in order, after the negotiation (one round trip less). Their
   * failures are theirs to handle; connect still resolves only once the negotiation succeeded.
   */
  onNegotiating?: (client: QmpClient) => void;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

type EventListener = (ev: QmpEvent) => void;

/**
 * What QEMU still owed a monitor's previous client (an event, a late answer), sent before the next
 * client's greeting: skipped, not taken for a foreign socket.
 */
function owedToPrevious(line: unknown): boolean {
  return isRecord(line) && !("QMP" in line) && ("event" in line || "return" in line || "error" in line);
}

/** Generous: a QEMU busy with TCG guests and migrations on a small host answers slowly, not never. */
const DEFAULT_TIMEOUT_MS = 15_000;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export class QmpClient {
  private buffer = "";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly listeners = new Set<EventListener>();
  private closedReason: Error | undefined;
  /** Settles when the connection ends (QEMU quit, socket closed, or close() called). */
  readonly closed: Promise<void>;
  private markClosed!: () => void;

  private constructor(
    private readonly socket: net.Socket,
    readonly path: string,
  ) {
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("error", (err) =>
      this.shutdown(new TeleportError(503, `QMP connection to ${path} failed: ${err.message}`)),
    );
    socket.on("close", () => this.shutdown(new TeleportError(503, `QMP connection to ${path} closed`)));
  }

  /** Connect, read the greeting and negotiate capabilities; resolves when commands can be sent. */
  static connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const socket = net.createConnection({ path });
      let greetingSeen = false;
      const fail = (err: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      const timer = setTimeout(
        () =>
          fail(
            new TeleportError(
              504,
              `QMP monitor ${path} did not greet within ${timeoutMs} ms ` +
                `(QEMU busy, or another client holds the monitor)`,
            ),
          ),
        timeoutMs,
      );
      socket.once("error", (err) =>
        fail(new TeleportError(503, `cannot connect to QMP monitor ${path}: ${err.message}`)),
      );
      // Read the greeting by hand; once it is in, hand the socket to a client.
      let early = "";
      const onGreeting = (chunk: Buffer) => {
        early += chunk.toString("utf8");
        // lines owed to the monitor's previous client may come first: skipped (seen once)
        let greeting: unknown;
        let nl: number;
        for (; (nl = early.indexOf("\n")) >= 0; early = early.slice(nl + 1)) {
          try {
            greeting = JSON.parse(early.slice(0, nl));
          } catch {
            fail(new TeleportError(502, `QMP monitor ${path} sent an unreadable greeting`));
            return;
          }
          if (!owedToPrevious(greeting)) break;
        }
        if (nl < 0) return;
        socket.off("data", onGreeting);
        if (!isRecord(greeting) || !("QMP" in greeting)) {
          fail(new TeleportError(502, `${path} is not a QMP monitor (no greeting)`));
          return;
        }
        greetingSeen = true;
        socket.removeAllListeners("error");
        const client = new QmpClient(socket, path);
        client.onData(early.slice(nl + 1));
        const negotiated = client.execute("qmp_capabilities", opts.oob ? { enable: ["oob"] } : undefined, {
          timeoutMs,
        });
        try {
          opts.onNegotiating?.(client);
        } catch (err) {
          negotiated.catch(() => undefined);
          return fail(TeleportError.from(err));
        }
        negotiated
          .then(() => {
            clearTimeout(timer);
            resolve(client);
          })
          .catch((err: Error) => fail(err));
      };
      socket.on("data", onGreeting);
      socket.once("close", () => {
        if (!greetingSeen) fail(new TeleportError(503, `QMP monitor ${path} closed before greeting`));
      });
    });
  }

  /** Send one command and resolve with its `return` value; QEMU errors reject with QmpCommandError. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    return this.send("execute", command, args, opts.timeoutMs);
  }

  /** An out-of-band command (the client must have connected with `oob`; the command must allow it). */
  executeOob<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    return this.send("exec-oob", command, args);
  }

  private send<T>(verb: "execute" | "exec-oob", command: string, args?: Record<string, unknown>, timeout?: number) {
    if (this.closedReason) return Promise.reject(this.closedReason);
    const id = String(this.nextId++);
    const timeoutMs = timeout ?? DEFAULT_TIMEOUT_MS;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new TeleportError(504, `QMP ${command} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: (v) => resolve(v as T), reject, timer });
      const msg: Record<string, unknown> = { [verb]: command, id };
      if (args) msg.arguments = args;
      this.socket.write(JSON.stringify(msg) + "\n");
    });
  }

  /** Listen to every event; returns the unsubscribe function. */
  onEvent(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolve with the first event that matches; reject on timeout or when the connection ends. */
  waitForEvent(match: (ev: QmpEvent) => boolean, timeoutMs: number, what = "QMP event"): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const finish = (err: Error | undefined, ev?: QmpEvent) => {
        clearTimeout(timer);
        off();
        if (err) reject(err);
        else resolve(ev as QmpEvent);
      };
      const off = this.onEvent((ev) => {
        if (match(ev)) finish(undefined, ev);
      });
      const timer = setTimeout(() => finish(new TeleportError(504, `no ${what} within ${timeoutMs} ms`)), timeoutMs);
      this.closed.then(() =>
        finish(this.closedReason ?? new TeleportError(503, `QMP connection to ${this.path} closed`)),
      );
    });
  }

  get isClosed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Close the connection; pending commands reject. Safe to call twice. */
  close(): Promise<void> {
    this.socket.end();
    this.socket.destroy();
    this.shutdown(new TeleportError(503, `QMP connection to ${this.path} closed by us`));
    return this.closed;
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      return; // QEMU only writes JSON here; a torn line cannot be matched to anything
    }
    if (!isRecord(msg)) return;
    if (typeof msg.event === "string") {
      const ev: QmpEvent = {
        event: msg.event,
        data: isRecord(msg.data) ? msg.data : {},
        timestamp: isRecord(msg.timestamp)
          ? { seconds: Number(msg.timestamp.seconds), microseconds: Number(msg.timestamp.microseconds) }
          : { seconds: 0, microseconds: 0 },
      };
      for (const l of [...this.listeners]) l(ev);
      return;
    }
    const id = typeof msg.id === "string" ? msg.id : undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!p || !id) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (isRecord(msg.error)) p.reject(new QmpCommandError(p.command, String(msg.error.class), String(msg.error.desc)));
    else p.resolve(msg.return);
  }

  private shutdown(reason: Error): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(reason);
    }
    this.pending.clear();
    this.markClosed();
  }
}
