/**
 * #23 point 7: the console's MESSAGE trigger starts a migration, so it gets the INVITE's rules
 * through the INVITE's own gate: `sip.tlsOnly` refuses a trigger that arrived over UDP (403 TLS
 * Required) and `limits.invitesPerSecond` limits triggers per sender (503 with Retry-After), each
 * refusal sent once. A raw UDP socket plays the sender; the console runs for real on sip.js.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { startConsole, type RunningConsole } from "../../agents/console";
import { HistoryStore } from "../../agents/console/history";
import { MessageTrigger } from "../../agents/console/message-trigger";
import { ConsoleLine } from "../../agents/console/session";
import { SourceAgent } from "../../agents/source/agent";
import { hostOf } from "../../agents/wiring";
import { parseConfig } from "../../lib/config/load";
import { silentLogger } from "../../lib/log/logger";
import type { IncomingRequest, ResponseOptions } from "../../lib/sip/backend";
import { sipBackend, type TestSipBackend } from "../harness";
import { tempDir } from "../sip/helpers";
import { makeCa } from "./certs";
import { RawSipClient } from "./raw-sip";

jest.setTimeout(60_000);

/** A MESSAGE as a SIP phone writes it (text/plain command). */
function rawMessage(target: string, localPort: number, command: string): { text: string; callId: string } {
  const callId = randomBytes(8).toString("hex");
  const text = [
    `MESSAGE ${target} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${localPort};branch=z9hG4bK${randomBytes(6).toString("hex")};rport`,
    "Max-Forwards: 70",
    `From: <sip:ops@127.0.0.1>;tag=${randomBytes(4).toString("hex")}`,
    `To: <${target}>`,
    `Call-ID: ${callId}`,
    "CSeq: 1 MESSAGE",
    "Content-Type: text/plain",
    `Content-Length: ${Buffer.byteLength(command)}`,
    "",
    command,
  ].join("\r\n");
  return { text, callId };
}

describe("the MESSAGE trigger gets the INVITE's rules", () => {
  const dir = tempDir("trigger-rules");
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("sip.tlsOnly: a trigger that arrived over UDP is refused 403 TLS Required, before its command is read", () => {
    const ca = makeCa(dir, "trigger");
    const config = parseConfig({
      host: "dc1",
      sip: {
        aor: "sip:dc1@127.0.0.1",
        listen: [{ transport: "tls", address: "127.0.0.1", port: 0 }],
        tls: { ...ca.issue("dc1", "IP:127.0.0.1"), ca: ca.ca },
        tlsOnly: true,
      },
      security: { allow: ["127.0.0.1"] },
      runDir: path.join(dir, "run"),
      stateDir: path.join(dir, "state"),
    });
    const sip = sipBackend(config, silentLogger, {}, "sipjs"); // never started: nothing may be sent
    const host = hostOf(config, silentLogger);
    const agent = new SourceAgent({ sip, host, hostName: "dc1", logger: silentLogger });
    const line = new ConsoleLine(agent, new HistoryStore(config.stateDir));
    const trigger = new MessageTrigger({ config, host, sip, line, logger: silentLogger });
    // what a backend hands over for a MESSAGE that reached a UDP socket (drachtio-server may listen on one)
    const overUdp: IncomingRequest = {
      method: "MESSAGE",
      ruri: "sip:dc1@127.0.0.1",
      callId: "tls-only-1",
      fromUri: "sip:ops@127.0.0.1",
      toUri: "sip:dc1@127.0.0.1",
      header: () => undefined,
      body: { contentType: "text/plain", content: "please move everything" },
      source: { address: "127.0.0.1", port: 5060, transport: "udp" },
    };
    // the handler, for a backend that hands the request over without the hook ...
    const sent: Array<{ status: number; reason?: string; opts?: ResponseOptions }> = [];
    trigger.handle(
      { ...overUdp, callId: "tls-only-2" },
      { send: (status, reason, opts) => sent.push({ status, reason, opts }) },
    );
    expect(sent.map((s) => [s.status, s.reason])).toEqual([[403, "TLS Required"]]);
    // ... and the hook a backend calls before any transaction
    const refusal = trigger.admit(overUdp);
    expect(refusal?.error.status).toBe(403);
    expect(refusal?.error.reason).toBe("TLS Required");
    expect(refusal?.error.details.join("; ")).toMatch(/accepts only TLS, got MESSAGE over UDP/);
  });

  describe("over real UDP", () => {
    let sip: TestSipBackend;
    let console_: RunningConsole;
    let port: number;
    beforeAll(async () => {
      const base = fs.mkdtempSync(path.join(dir, "c-"));
      const config = parseConfig({
        host: "dc1",
        sip: { aor: "sip:dc1@127.0.0.1", listen: [{ transport: "udp", address: "127.0.0.1", port: 0 }] },
        console: { http: "127.0.0.1:0" },
        security: { allow: ["127.0.0.1"] },
        limits: { invitesPerSecond: 2 },
        runDir: path.join(base, "run"),
        stateDir: path.join(base, "state"),
      });
      sip = sipBackend(config, silentLogger, {}, "sipjs");
      console_ = await startConsole({ config, sip, host: hostOf(config, silentLogger), logger: silentLogger });
      await sip.start();
      port = sip.listeners[0].port;
    });
    afterAll(async () => {
      await console_?.stop();
      await sip?.stop();
    });

    it("limits.invitesPerSecond: a burst from one sender gets 503 with Retry-After, each once", async () => {
      const phone = await RawSipClient.udp(port);
      try {
        const target = `sip:dc1@127.0.0.1:${port}`;
        // not a command: an admitted trigger is answered 400, so only the gate decides the rest
        const burst = Array.from({ length: 10 }, () => rawMessage(target, phone.localPort, "please move everything"));
        burst.forEach((m) => phone.send(m.text));
        const finals = await Promise.all(burst.map((m) => phone.final(m.callId)));
        const statuses = finals.map((f) => f?.status);
        expect(statuses.filter((s) => s === 400).length).toBeLessThanOrEqual(3); // a burst of 2 (and a refill)
        const limited = finals.filter((f) => f?.status === 503);
        expect(limited.length).toBeGreaterThanOrEqual(7);
        expect(Number(limited[0]?.header("retry-after")[0])).toBeGreaterThanOrEqual(1);
        expect(limited[0]?.header("warning")[0]).toMatch(/more than 2 MESSAGE triggers per second from 127\.0\.0\.1/);
        await new Promise((r) => setTimeout(r, 500));
        for (const m of burst) expect(phone.all(m.callId)).toHaveLength(1);
      } finally {
        phone.close();
      }
    });
  });
});
