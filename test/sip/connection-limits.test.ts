/** Inbound TCP connections: per-address and total limits, eviction of silent ones, the idle timeout. */
import net from "node:net";
import type { SipJsBackend } from "../../lib/sip";
import { startAgent } from "./helpers";

function connect(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port, localAddress }, () => resolve(s));
    s.once("error", reject);
  });
}

/** Whether the agent closed the connection within `ms` (a read gets EOF). */
function closedWithin(s: net.Socket, ms: number): Promise<boolean> {
  if (s.destroyed || s.readableEnded) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    s.once("close", () => (clearTimeout(t), resolve(true)));
    s.once("end", () => (clearTimeout(t), resolve(true)));
    s.resume();
  });
}

const options = (port: number, from: string, local: number) =>
  [
    `OPTIONS sip:dc2@127.0.0.1:${port};transport=tcp SIP/2.0`,
    `Via: SIP/2.0/TCP ${from}:${local};branch=z9hG4bK-${Math.random().toString(36).slice(2)}`,
    "Max-Forwards: 70",
    `From: <sip:probe@${from}>;tag=1`,
    `To: <sip:dc2@127.0.0.1>`,
    `Call-ID: ${Math.random().toString(36).slice(2)}@${from}`,
    "CSeq: 1 OPTIONS",
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");

describe("SIP TCP connection limits", () => {
  let agent: SipJsBackend;
  const sockets: net.Socket[] = [];
  afterEach(async () => {
    sockets.splice(0).forEach((s) => s.destroy());
    await agent?.stop();
  });

  it("closes connections over the per-address limit at once, others' go on", async () => {
    agent = await startAgent("dc2", ["tcp"], {
      limits: { maxMessageBytes: 65536, maxHeaders: 256, maxConnectionsPerAddress: 3, maxConnections: 100 },
    });
    const port = agent.listeners[0].port;
    for (let i = 0; i < 5; i++) sockets.push(await connect(port, "127.0.0.2"));
    const closed = await Promise.all(sockets.map((s) => closedWithin(s, 500)));
    expect(closed.filter(Boolean)).toHaveLength(2);
    const other = await connect(port, "127.0.0.3");
    sockets.push(other);
    expect(await closedWithin(other, 300)).toBe(false);
  });

  it("at the total limit a new connection replaces the oldest silent one, never one that talks", async () => {
    agent = await startAgent("dc2", ["tcp"], {
      limits: { maxMessageBytes: 65536, maxHeaders: 256, maxConnectionsPerAddress: 10, maxConnections: 3 },
    });
    const port = agent.listeners[0].port;
    const talker = await connect(port, "127.0.0.1");
    sockets.push(talker);
    const answered = new Promise<string>((resolve) => talker.once("data", (d) => resolve(d.toString())));
    talker.write(options(port, "127.0.0.1", talker.localPort!));
    expect(await answered).toMatch(/^SIP\/2\.0 200/);
    const silent = [await connect(port, "127.0.0.4"), await connect(port, "127.0.0.5")];
    sockets.push(...silent);
    await new Promise((r) => setTimeout(r, 50));
    const newcomer = await connect(port, "127.0.0.6");
    sockets.push(newcomer);
    expect(await closedWithin(silent[0], 500)).toBe(true); // the oldest silent one went
    expect(await closedWithin(silent[1], 200)).toBe(false);
    expect(await closedWithin(talker, 200)).toBe(false);
    expect(await closedWithin(newcomer, 200)).toBe(false);
  });

  it("closes a connection that stays silent for connectionIdleS", async () => {
    agent = await startAgent("dc2", ["tcp"], {
      limits: { maxMessageBytes: 65536, maxHeaders: 256, connectionIdleS: 1 },
    });
    const s = await connect(agent.listeners[0].port, "127.0.0.7");
    sockets.push(s);
    expect(await closedWithin(s, 600)).toBe(false);
    expect(await closedWithin(s, 1500)).toBe(true);
  });
});
