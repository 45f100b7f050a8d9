/**
 * What the user sees, measured from the `user` namespace: iputils ping every 5 ms (parsed here),
 * a TCP echo every 10 ms and a UDP stream echoed by the guest (the thesis' video, counted per
 * 100 ms bucket). The TCP and UDP probes run in this process; a socat in the user namespace only
 * relays them from a Unix socket (Unix sockets cross namespaces, IP sockets do not), so the
 * connection the guest sees, its retransmissions and its losses are those of the user namespace.
 * Every timestamp is wall-clock milliseconds, the clock QMP events and `ping -D` use.
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";

export type ProbeKind = "ping" | "tcp" | "udp";

/** One probe's raw record: when each answer arrived (and its size for the stream). */
export interface ProbeRecord {
  name: string;
  kind: ProbeKind;
  target: string;
  intervalMs: number;
  startedAt: number;
  stoppedAt: number;
  /** Arrival time of every answer, ascending. */
  replies: number[];
  /** Bytes of each answer (udp only, same order as replies). */
  bytes?: number[];
  /** Ping only: sequence numbers that never got a reply between the first and the last reply. */
  lost?: number;
  /** Why the probe ended early, when it did (connection reset, relay died). */
  error?: string;
}

export interface Probe {
  readonly name: string;
  stop(): Promise<ProbeRecord>;
}

/** `[1700000000.123456] 64 bytes from 10.0.0.1: icmp_seq=7 ttl=64 time=0.3 ms` */
const PING_LINE = /^\[(\d+\.\d+)\].*icmp_seq=(\d+)/;

export function parsePingLine(line: string): { t: number; seq: number } | undefined {
  const m = PING_LINE.exec(line);
  return m ? { t: Number(m[1]) * 1000, seq: Number(m[2]) } : undefined;
}

/** Replies' sequence numbers -> how many are missing between the first and the last one. */
export function pingLost(seqs: readonly number[]): number {
  if (seqs.length === 0) return 0;
  const unique = new Set(seqs);
  return Math.max(...unique) - Math.min(...unique) + 1 - unique.size;
}

function killChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGINT");
    setTimeout(() => child.kill("SIGKILL"), 2000).unref();
  });
}

/** iputils ping at 5 ms with -D timestamps; only 200/s works here (-i 0.01 gives ~63/s). */
export function startPing(nsExec: string[], name: string, target: string, intervalMs = 5): Probe {
  const startedAt = Date.now();
  const child = spawn(
    nsExec[0],
    [...nsExec.slice(1), "ping", "-n", "-D", "-i", String(intervalMs / 1000), "-W", "1", target],
    {
      stdio: ["ignore", "pipe", "ignore"],
    },
  );
  const replies: number[] = [];
  const seqs: number[] = [];
  let partial = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      const r = parsePingLine(line);
      if (r) {
        replies.push(r.t);
        seqs.push(r.seq);
      }
    }
  });
  return {
    name,
    async stop() {
      // ping's own -D timestamps date the replies, so the end is when we stopped asking, not when ping exited.
      const stoppedAt = Date.now();
      await killChild(child);
      return {
        name,
        kind: "ping",
        target,
        intervalMs,
        startedAt,
        stoppedAt,
        replies: replies.filter((t) => t <= stoppedAt),
        lost: pingLost(seqs),
      };
    },
  };
}

/** socat in the user namespace: Unix socket in this folder <-> `remote` (a socat address). */
async function startRelay(
  nsExec: string[],
  dir: string,
  name: string,
  remote: string,
): Promise<{ socketPath: string; child: ChildProcess }> {
  const socketPath = path.join(dir, `${name.replace(/[^\w.-]+/g, "-")}.sock`);
  fs.rmSync(socketPath, { force: true });
  const child = spawn(nsExec[0], [...nsExec.slice(1), "socat", `UNIX-LISTEN:${socketPath}`, remote], {
    stdio: "ignore",
  });
  for (let i = 0; i < 200 && !fs.existsSync(socketPath); i++) await new Promise((r) => setTimeout(r, 10));
  if (!fs.existsSync(socketPath)) {
    await killChild(child);
    throw new Error(`probe ${name}: socat relay did not come up`);
  }
  return { socketPath, child };
}

/** Connect to the relay; socat binds the socket a moment before it listens, so refusals are retried. */
async function connectUnix(socketPath: string, timeoutMs = 5000): Promise<net.Socket> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(socketPath, () => resolve(s));
        s.once("error", reject);
      });
    } catch (err) {
      if (Date.now() > until)
        throw new Error(`no connection to relay ${socketPath} within ${timeoutMs} ms: ${String(err)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/**
 * Shared shape of the relayed probes: send `payload(n)` every `intervalMs`, record each chunk
 * that comes back. For TCP the echo is line-based and in order, so a reply is one line.
 */
async function startRelayed(
  kind: "tcp" | "udp",
  nsExec: string[],
  dir: string,
  name: string,
  target: string,
  remote: string,
  intervalMs: number,
  payload: (n: number) => Buffer,
): Promise<Probe> {
  const relay = await startRelay(nsExec, dir, name, remote);
  const sock = await connectUnix(relay.socketPath).catch(async (err: unknown) => {
    await killChild(relay.child);
    throw err;
  });
  const startedAt = Date.now();
  const replies: number[] = [];
  const bytes: number[] = [];
  let error: string | undefined;
  let partial = "";
  sock.on("data", (chunk: Buffer) => {
    const now = Date.now();
    if (kind === "udp") {
      replies.push(now);
      bytes.push(chunk.length);
      return;
    }
    const lines = (partial + chunk.toString()).split("\n");
    partial = lines.pop() ?? "";
    for (let i = 0; i < lines.length; i++) replies.push(now);
  });
  sock.on("error", (err) => (error = err.message));
  sock.on("close", () => (error ??= "relay closed the connection"));
  let n = 0;
  const timer = setInterval(() => {
    if (!sock.destroyed) sock.write(payload(n++));
  }, intervalMs);
  return {
    name,
    async stop() {
      clearInterval(timer);
      const stoppedAt = Date.now();
      // Answers already in the socket when we stopped asking count as arrived by then: on a
      // loaded machine this process may read them late, which is not the guest's silence.
      await new Promise((r) => setTimeout(r, 100));
      for (let i = replies.length - 1; i >= 0 && replies[i] > stoppedAt; i--) replies[i] = stoppedAt;
      sock.removeAllListeners("close");
      sock.destroy();
      await killChild(relay.child);
      fs.rmSync(relay.socketPath, { force: true });
      const rec: ProbeRecord = { name, kind, target, intervalMs, startedAt, stoppedAt, replies };
      if (kind === "udp") rec.bytes = bytes;
      if (error) rec.error = error;
      return rec;
    },
  };
}

/** One TCP connection to the guest's echo port; a line every 10 ms. */
export function startTcpEcho(
  nsExec: string[],
  dir: string,
  name: string,
  target: string,
  port = 7,
  intervalMs = 10,
): Promise<Probe> {
  return startRelayed("tcp", nsExec, dir, name, target, `TCP:${target}:${port}`, intervalMs, (n) =>
    Buffer.from(`${n}\n`),
  );
}

/**
 * A UDP stream through the guest's UDP echo: `size` bytes every `intervalMs` (default 500 B per
 * 5 ms = 0.8 Mbit/s). UDP-SENDTO does not connect, so an ICMP error cannot end the relay. The
 * source port is fixed because the guest's echo answers one peer until 10 s of silence.
 */
export function startUdpStream(
  nsExec: string[],
  dir: string,
  name: string,
  target: string,
  opts: { port?: number; sourcePort: number; intervalMs?: number; size?: number },
): Promise<Probe> {
  const chunk = Buffer.alloc(opts.size ?? 500, 0x76);
  const remote = `UDP-SENDTO:${target}:${opts.port ?? 7},sp=${opts.sourcePort},reuseaddr`;
  return startRelayed("udp", nsExec, dir, name, target, remote, opts.intervalMs ?? 5, () => chunk);
}
