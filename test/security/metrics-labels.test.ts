/**
 * A stranger cannot grow the agent's metrics: 10,000 UDP datagrams with random method tokens and
 * odd status codes, sent to a real SIP listener whose trace feeds the metrics (as the destination
 * agent wires them), add no series; the retransmission memory stays bounded.
 */
import { randomBytes } from "node:crypto";
import dgram from "node:dgram";
import { AgentMetrics } from "../../lib/metrics/metrics";
import { answerEverything, listenerPort, startAgent } from "../sip/helpers";

jest.setTimeout(60_000);

function request(method: string, port: number, localPort: number): string {
  const tag = randomBytes(4).toString("hex");
  return [
    `${method} sip:dc2@127.0.0.1:${port} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${localPort};branch=z9hG4bK${randomBytes(6).toString("hex")};rport`,
    "Max-Forwards: 70",
    `From: <sip:x@127.0.0.1>;tag=${tag}`,
    `To: <sip:dc2@127.0.0.1:${port}>`,
    `Call-ID: ${randomBytes(8).toString("hex")}`,
    `CSeq: 1 ${method}`,
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
}

/** A response to nothing, with any three-digit status the wire allows. */
function strayResponse(status: number, method: string, localPort: number): string {
  return [
    `SIP/2.0 ${status} Whatever`,
    `Via: SIP/2.0/UDP 127.0.0.1:${localPort};branch=z9hG4bK${randomBytes(6).toString("hex")}`,
    "From: <sip:dc2@127.0.0.1>;tag=a",
    "To: <sip:x@127.0.0.1>;tag=b",
    `Call-ID: ${randomBytes(8).toString("hex")}`,
    `CSeq: 1 ${method}`,
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
}

async function seriesCount(metrics: AgentMetrics): Promise<number> {
  const all = await metrics.registry.getMetricsAsJSON();
  return all.filter((m) => m.name.startsWith("sip_teleport_sip_")).reduce((n, m) => n + m.values.length, 0);
}

test("10,000 datagrams with random method tokens leave the series count unchanged", async () => {
  const uas = await startAgent("dc2", ["udp"]);
  answerEverything(uas);
  const metrics = new AgentMetrics("destination");
  let received = 0;
  const stopTrace = uas.onTrace((e) => {
    if (e.direction === "received") received++;
    metrics.observe(e);
  });
  const port = listenerPort(uas, "udp");
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  const localPort = sock.address().port;
  const send = (text: string) => new Promise<void>((r) => sock.send(text, port, "127.0.0.1", () => r()));
  const settle = async (expected: number) => {
    for (let i = 0; i < 200 && received < expected; i++) await new Promise((r) => setTimeout(r, 25));
  };
  try {
    // the baseline: a known method, an unknown token, a stray response (every label value a flood could reach)
    await send(request("OPTIONS", port, localPort));
    await send(request("XYZZY", port, localPort));
    await send(strayResponse(180, "OPTIONS", localPort));
    await send(strayResponse(999, "XYZZY", localPort));
    await settle(4);
    const before = await seriesCount(metrics);
    for (let i = 0; i < 10_000; i++) {
      const token = `M${randomBytes(6).toString("hex").toUpperCase()}`;
      await send(i % 10 === 9 ? strayResponse(700 + (i % 300), token, localPort) : request(token, port, localPort));
      if (i % 50 === 49) await settle(i - 100); // pace the flood to the listener, so the socket drops none
    }
    await settle(10_004);
    expect(received).toBeGreaterThan(9900); // the agent's trace (hence its metrics) saw them; UDP may drop a few
    expect(await seriesCount(metrics)).toBe(before);
    const seen = (metrics as unknown as { seen: Map<string, number> }).seen;
    expect(seen.size).toBeLessThanOrEqual(5000);
  } finally {
    stopTrace();
    sock.close();
    await uas.stop();
  }
});
