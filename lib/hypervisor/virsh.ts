/**
 * libvirt through `virsh` (libvirt-clients), the one file that knows it. virsh over a Node binding:
 * the npm bindings (node-libvirt, libvirt) are unmaintained and need a native build against
 * libvirt-dev, while virsh is libvirt's own maintained client, ships with every libvirt host and
 * speaks every transport.
 *
 * Two ways to call it. Short queries and settings (`ask`: domstate, domjobinfo, dumpxml,
 * migrate-setspeed, suspend...) go through one interactive `virsh -c URI` per URI and binary, kept
 * for the process's life over a pipe (VirshSession): no process start, no new connection to
 * libvirtd per poll. Long calls (`run`: start, destroy, define; `spawn`: migrate) are one process
 * each, arguments as an array (never a shell), so they never hold up the session's polls. Domain
 * lifecycle events (the resume of an arrival) come from a second long-lived `virsh event --loop`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import execa from "execa";
import { TeleportError } from "../errors";
import { domainShape, parseDomain, type DomainShape } from "./libvirt-domain-xml";
import type { XmlElement } from "./libvirt-xml";

export type { DomainShape };

/** `virsh domstate --reason`: "running (booted)", "shut off (migrated)", "paused (migration)". */
export interface DomainState {
  state: string;
  reason: string;
}

/** `virsh domjobinfo`'s "Key: value unit" lines, values converted to whole numbers (bytes, ms). */
export type JobInfo = Map<string, number | string>;

const UNITS: ReadonlyMap<string, number> = new Map([
  ["B", 1],
  ["KiB", 1024],
  ["MiB", 1024 ** 2],
  ["GiB", 1024 ** 3],
  ["TiB", 1024 ** 4],
]);

export function parseJobInfo(text: string): JobInfo {
  const info: JobInfo = new Map();
  for (const line of text.split("\n")) {
    const m = /^([^:]+):\s+(.*?)\s*$/.exec(line);
    if (!m) continue;
    const [, key, raw] = m;
    const num = /^(-?[\d.]+)\s*(B|KiB|MiB|GiB|TiB|ms|bytes|pages\/s)?$/.exec(raw);
    // "98.523 MiB" is not a whole number of bytes: NRDL carries integers, so round here
    info.set(key.trim(), num ? Math.round(Number(num[1]) * (UNITS.get(num[2] ?? "") ?? 1)) : raw);
  }
  return info;
}

/** A definition virsh printed; parsed like any other (virsh's output is no reason to grep). */
export function parseDomainXml(xml: string, uri = "libvirt"): XmlElement {
  const parsed = parseDomain(xml);
  if (!parsed.ok)
    throw new TeleportError(500, `${uri} printed a domain definition this agent cannot read`, [parsed.why]);
  return parsed.domain;
}

/** How long one command in the session may take before the session is killed (and started again on the next). */
const SESSION_TIMEOUT_MS = 30_000;
/** virsh's interactive prompt, which its readline prints before echoing each line it reads. */
const PROMPT = "virsh # ";
/** What virsh says on stderr about its own connection, not about a command. */
const CONNECTION_NOTE = /^error: (Disconnected from .* due to .*|Reconnected to the hypervisor)$/;

/** One argument as virsh's shell parser reads it back unchanged (vshCommandStringGetArg). */
export function virshQuote(arg: string): string {
  if (/[\r\n]/.test(arg)) throw new TeleportError(400, "a virsh argument cannot hold a line break", [arg]);
  if (/^[A-Za-z0-9._:/=?&@%+,-]+$/.test(arg)) return arg;
  return `"${arg.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

interface Answer {
  ok: boolean;
  stdout: string;
  stderr: string;
}

/**
 * One `virsh -q -c URI` in interactive mode over pipes, one command at a time. virsh answers with
 * no end marker and sends errors to stderr, so each command is framed: `echo B\@T`, the command,
 * `echo E\@T`, then the unknown command `ZT`. T is fresh per command; `\@` makes virsh print "B@T",
 * which the echo of the input line ("echo B\@T") cannot be mistaken for. The command's output is
 * what follows its echoed line up to the prompt of `echo E\@T`; its errors are what stderr holds
 * before "unknown command: 'ZT'". When virsh dies or a command outlasts SESSION_TIMEOUT_MS, the
 * session is killed and the next command starts a new one. virsh reconnects by itself when
 * libvirtd restarts.
 */
export class VirshSession {
  private child: ChildProcess | undefined;
  private out = "";
  private err = "";
  private exited: Error | undefined;
  private wake: (() => void) | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private count = 0;

  constructor(
    readonly uri: string,
    private readonly binary = "virsh",
  ) {}

  /** Queue one command; resolves with what virsh printed (rejects only when the session itself failed). */
  ask(args: string[]): Promise<Answer> {
    const line = args.map(virshQuote).join(" ");
    const turn = this.queue.then(() => this.once(line));
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  /** The session's virsh process, when one runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  close(): void {
    this.child?.kill("SIGKILL");
    this.child = undefined;
  }

  private start(): ChildProcess {
    const child = spawn(this.binary, ["-q", "-c", this.uri], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, TERM: "dumb", LC_ALL: "C" },
    });
    this.out = "";
    this.err = "";
    this.exited = undefined;
    const poke = () => this.wake?.();
    child.stdout?.setEncoding("utf8").on("data", (d: string) => ((this.out += d), poke()));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => ((this.err += d), poke()));
    const gone = (why: string) => {
      if (this.child === child) this.child = undefined;
      this.exited = new Error(why);
      poke();
    };
    child.on("error", (e) => gone(e.message));
    child.on("exit", (code, signal) => gone(`virsh exited (${signal ?? `code ${code}`})`));
    child.stdin?.on("error", () => undefined); // EPIPE when it died: the exit says so
    // the agent's life, not longer: an idle session keeps no process alive
    child.unref();
    for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void })?.unref?.();
    this.child = child;
    return child;
  }

  private async once(line: string, retry = true): Promise<Answer> {
    const child = this.child ?? this.start();
    const t = `${process.pid.toString(36)}${crypto.randomBytes(4).toString("hex")}${(++this.count).toString(36)}`;
    const [begin, end, errEnd] = [`B@${t}`, `E@${t}`, `error: unknown command: 'Z${t}'`];
    child.stdin?.write(`echo B\\@${t}\n${line}\necho E\\@${t}\nZ${t}\n`);
    const deadline = Date.now() + SESSION_TIMEOUT_MS;
    for (;;) {
      const e = this.err.indexOf(errEnd);
      const o = this.out.indexOf(end);
      if (o >= 0 && e >= 0) {
        // after "B@T" (with or without its line break): the prompt, the command's echoed line, its output
        const from = this.out.indexOf("\n", this.out.indexOf(PROMPT, this.out.indexOf(begin))) + 1;
        const stdout = this.out.slice(from, this.out.lastIndexOf(PROMPT, o));
        const stderr = this.err
          .slice(0, e)
          .split("\n")
          .filter((l) => l && !CONNECTION_NOTE.test(l))
          .join("\n");
        this.out = this.out.slice(o + end.length);
        this.err = this.err.slice(e + errEnd.length + 1);
        return { ok: !/^error: /m.test(stderr), stdout: stdout.trim(), stderr };
      }
      if (this.exited || Date.now() > deadline) {
        const why = this.exited?.message ?? `no answer within ${SESSION_TIMEOUT_MS} ms`;
        this.close();
        if (retry && this.exited) return this.once(line, false); // died between commands: once more, afresh
        throw new TeleportError(503, `libvirt at ${this.uri} does not answer`, [`virsh session: ${why}`]);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.wake = () => (clearTimeout(timer), resolve());
      });
      this.wake = undefined;
    }
  }
}

/** What `virsh event --loop --event lifecycle` prints per event: domain, event ("Resumed") and detail ("Migrated"). */
const LIFECYCLE = /^event 'lifecycle' for domain '(.*)': (\S+)(?: (.*))?$/;
/** A stream that ended (libvirtd restarted) while someone listens is started again after this. */
const EVENTS_RESTART_MS = 200;

export type LifecycleListener = (domain: string, event: string, detail: string) => void;

/**
 * libvirt's domain lifecycle events of one URI, from one `virsh event --loop --event lifecycle` (a
 * second long-lived virsh: an interactive session blocks in `event --loop`). Started by the first
 * listener or follow(), kept for the process's life, and started again when it ended and someone listens.
 */
export class LifecycleEvents {
  private child: ChildProcess | undefined;
  private readonly listeners = new Set<LifecycleListener>();
  private restart: NodeJS.Timeout | undefined;

  constructor(
    readonly uri: string,
    private readonly binary = "virsh",
  ) {}

  /** Make sure the stream runs (before the event one waits for, so it is not missed). */
  follow(): void {
    if (this.child) return;
    const child = spawn(this.binary, ["-q", "-c", this.uri, "event", "--loop", "--event", "lifecycle"], {
      stdio: ["ignore", "pipe", "ignore"],
      env: { ...process.env, LC_ALL: "C" },
    });
    let buf = "";
    child.stdout?.setEncoding("utf8").on("data", (d: string) => {
      buf += d;
      const lines = buf.split("\n");
      buf = lines.pop() ?? "";
      for (const m of lines.map((l) => LIFECYCLE.exec(l)))
        if (m) for (const l of [...this.listeners]) l(m[1], m[2], m[3] ?? "");
    });
    const gone = () => {
      if (this.child !== child) return;
      this.child = undefined;
      if (!this.listeners.size) return;
      this.restart = setTimeout(() => this.listeners.size && this.follow(), EVENTS_RESTART_MS);
      this.restart.unref();
    };
    child.on("error", gone);
    child.on("exit", gone);
    child.unref();
    (child.stdout as unknown as { unref?: () => void } | null)?.unref?.();
    this.child = child;
  }

  /** Call `listener` for every lifecycle event of this URI until the returned function is called. */
  on(listener: LifecycleListener): () => void {
    this.listeners.add(listener);
    this.follow();
    return () => void this.listeners.delete(listener);
  }

  close(): void {
    clearTimeout(this.restart);
    this.listeners.clear();
    this.child?.kill("SIGKILL");
    this.child = undefined;
  }
}

/** One session per binary and URI, for the process's life. */
const sessions = new Map<string, { session: VirshSession; events: LifecycleEvents }>();

function sessionFor(uri: string, binary: string): { session: VirshSession; events: LifecycleEvents } {
  const key = `${binary}\0${uri}`;
  let s = sessions.get(key);
  if (!s) sessions.set(key, (s = { session: new VirshSession(uri, binary), events: new LifecycleEvents(uri, binary) }));
  return s;
}

/** End the sessions and event streams to a URI (every URI when none is given): a libvirtd gone for good. */
export function closeVirshSessions(uri?: string): void {
  for (const [key, s] of sessions)
    if (uri === undefined || s.session.uri === uri) {
      s.session.close();
      s.events.close();
      sessions.delete(key);
    }
}

export class Virsh {
  constructor(
    readonly uri: string,
    private readonly binary = "virsh",
  ) {}

  /** Run one virsh command as a process of its own (long calls); a failure becomes a TeleportError. */
  async run(args: string[], status = 500): Promise<string> {
    const r = await execa(this.binary, ["-q", "-c", this.uri, ...args], { reject: false, stdin: "ignore" });
    if (r.exitCode !== 0) throw this.failed(args, r.stderr || r.stdout || `exit code ${r.exitCode}`, status);
    return r.stdout;
  }

  /** One short command through this URI's long-lived session; a failure becomes a TeleportError. */
  async ask(args: string[], status = 500): Promise<string> {
    const r = await sessionFor(this.uri, this.binary).session.ask(args);
    if (!r.ok) throw this.failed(args, r.stderr || r.stdout, status);
    return r.stdout;
  }

  /** A long-running virsh process (migrate), for the caller to await, with its exit code and stderr. */
  spawn(args: string[]): execa.ExecaChildProcess {
    return execa(this.binary, ["-q", "-c", this.uri, ...args], { reject: false, stdin: "ignore" });
  }

  /** `listener` for each lifecycle event of `domain` ("Resumed", "Migrated") until the returned function is called. */
  onLifecycle(domain: string, listener: (event: string, detail: string) => void): () => void {
    return sessionFor(this.uri, this.binary).events.on((d, event, detail) => d === domain && listener(event, detail));
  }

  /** Have this URI's event stream running (before waiting for an event, so that it is not missed). */
  followLifecycle(): void {
    sessionFor(this.uri, this.binary).events.follow();
  }

  /** The domain's state, or undefined when this libvirt does not define it. */
  async domState(domain: string): Promise<DomainState | undefined> {
    const r = await sessionFor(this.uri, this.binary).session.ask(["domstate", "--reason", domain]);
    if (!r.ok) {
      if (/failed to get domain|Domain not found/i.test(r.stderr)) return undefined;
      throw new TeleportError(503, `libvirt at ${this.uri} does not answer`, [r.stderr.replace(/^error: /gm, "")]);
    }
    const m = /^(.*?)\s*(?:\((.*)\))?\s*$/.exec(r.stdout.trim());
    return { state: m?.[1] ?? r.stdout.trim(), reason: m?.[2] ?? "" };
  }

  async shape(domain: string): Promise<DomainShape> {
    return domainShape(parseDomainXml(await this.ask(["dumpxml", "--inactive", domain]), this.uri));
  }

  /** The definition libvirt would send for it when migrating: what an incoming one is compared with. */
  async migratable(domain: string): Promise<XmlElement> {
    return parseDomainXml(await this.ask(["dumpxml", "--inactive", "--migratable", domain]), this.uri);
  }

  async jobInfo(domain: string, completed = false): Promise<JobInfo> {
    return parseJobInfo(await this.ask(["domjobinfo", ...(completed ? ["--completed"] : []), domain]));
  }

  private failed(args: string[], text: string, status: number): TeleportError {
    const why = text.replace(/^error: /gm, "").trim();
    return new TeleportError(status, `virsh ${args[0]} failed on ${this.uri}`, why.split("\n").filter(Boolean));
  }
}
