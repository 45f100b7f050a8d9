/**
 * TLS between the agents with certificates a CA made by openssl at test time signed: a real
 * migration when the destination's certificate verifies, a refusal (nothing moved) when it does
 * not, and `sip.tlsOnly`, which refuses non-TLS listeners at load time and non-TLS requests at run time.
 */
import fs from "node:fs";
import path from "node:path";
import { DestinationAgent } from "../../agents/destination/agent";
import { hostOf, sipOf } from "../../agents/wiring";
import { parseConfig } from "../../lib/config/load";
import { silentLogger } from "../../lib/log/logger";
import { bootOnSource, expectAllOn, guestDefs, refusal, SEQUENTIAL, pairPerTest, move } from "../harness";
import { tempDir } from "../sip/helpers";
import { makeCa } from "./certs";
import { RawSipClient, rawInvite } from "./raw-sip";

describe("TLS between the agents", () => {
  const dir = tempDir("tls-agents");
  const good = makeCa(dir, "good");
  const rogue = makeCa(dir, "rogue");
  const start = pairPerTest();
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const tlsSide = (issued: { cert: string; key: string }, ca: string) => ({
    sip: { tls: { ...issued, ca, verify: true } },
  });

  it("migrates over TLS with CA-signed certificates verified on the source, destination tlsOnly", async () => {
    const pair = await start(await guestDefs([["router1", "router"]]), {
      transport: "tls",
      dc1: tlsSide(good.issue("dc1", "IP:127.0.0.1"), good.ca),
      dc2: { sip: { ...tlsSide(good.issue("dc2", "IP:127.0.0.1,DNS:localhost"), good.ca).sip, tlsOnly: true } },
    });
    await bootOnSource(pair);
    const summary = await move(pair, { vms: ["router1"] });
    expect(summary.outcome).toBe("completed");
    await expectAllOn(pair, "dc2");
    expect(pair.dc2.trace.every((e) => e.peer?.transport === "tls")).toBe(true);
  });

  it.each([
    [
      "signed by a CA the source does not trust",
      () => rogue.issue("dc2", "IP:127.0.0.1"),
      /self.signed|unable to (get|verify)/i,
    ],
    [
      "issued for another host name",
      () => good.issue("elsewhere", "DNS:elsewhere.example"),
      /altnames|does not match|IP: 127\.0\.0\.1 is not in the cert/i,
    ],
  ])("refuses a destination certificate %s: nothing moves", async (_what, issued, why) => {
    const pair = await start(await guestDefs([["router1", "router"]]), {
      transport: "tls",
      dc1: tlsSide(good.issue("dc1", "IP:127.0.0.1"), good.ca),
      dc2: tlsSide(issued(), good.ca),
    });
    await bootOnSource(pair);
    const e = await refusal(pair.dc1.agent.migrate({ to: pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL }));
    expect(e.status).toBe(503);
    expect(e.message).toMatch(why);
    await expectAllOn(pair, "dc1");
  });

  it("tlsOnly: a config with a non-TLS listener is refused with the field named", () => {
    const issued = good.issue("conf", "IP:127.0.0.1");
    expect(() =>
      parseConfig({
        sip: {
          tlsOnly: true,
          tls: issued,
          listen: [
            { transport: "tls", port: 0 },
            { transport: "udp", port: 0 },
          ],
        },
      }),
    ).toThrow(/sip\.listen\.1\.transport: sip\.tlsOnly refuses a udp listener/);
    expect(() => parseConfig({ sip: { tlsOnly: true, listen: [{ transport: "tls", port: 0 }] } })).toThrow(
      /sip\.tls: sip\.tlsOnly needs sip\.tls/,
    );
  });

  it("tlsOnly: a request that arrives over anything but TLS gets 403 TLS Required", async () => {
    const issued = good.issue("only", "IP:127.0.0.1");
    const base = tempDir("tls-only");
    const cfg = parseConfig({
      sip: { aor: "sip:dc2@127.0.0.1", tlsOnly: true, tls: issued, listen: [{ transport: "tls", port: 0 }] },
      stateDir: path.join(base, "state"),
      runDir: path.join(base, "run"),
    });
    // a backend that (against the config) also listens on UDP: the agent must still refuse what comes that way
    const sip = sipOf(
      { ...cfg, sip: { ...cfg.sip, listen: [{ transport: "udp", address: "127.0.0.1", port: 0 }] } },
      silentLogger,
    );
    const agent = new DestinationAgent({ config: cfg, sip, host: hostOf(cfg, silentLogger), logger: silentLogger });
    await agent.start();
    const port = sip.listeners[0].port;
    const raw = await RawSipClient.udp(port);
    try {
      const inv = rawInvite(`sip:dc2@127.0.0.1:${port}`, "sip:dc1@127.0.0.1", raw.localPort, "<nrdl/>");
      raw.send(inv.text);
      const r = await raw.final(inv.callId);
      expect(r?.status).toBe(403);
      expect(r?.header("warning")[0]).toMatch(/accepts only TLS, got INVITE over UDP/);
    } finally {
      raw.close();
      await agent.stop();
      fs.rmSync(base, { recursive: true, force: true });
    }
  });

  /**
   * Mutual TLS: the destination asks every caller for a certificate (sip.tls.clientCa) and takes
   * the sip: URIs in the subjectAltName of one that verifies as the caller's identity. The source
   * always says From sip:dc1@dc1.example; only the certificate decides.
   */
  describe("mutual TLS: the caller's certificate is its identity", () => {
    const startWith = async (client: { cert: string; key: string }) => {
      const pair = await start(await guestDefs([["router1", "router"]]), {
        transport: "tls",
        dc1: { sip: { aor: "sip:dc1@dc1.example", tls: { ...client, ca: good.ca } } },
        dc2: {
          sip: { tls: { ...good.issue("dc2", "IP:127.0.0.1"), ca: good.ca, clientCa: good.ca } },
          // no address entry: loopback is not enough, only the certificate can admit dc1
          security: { allow: ["sip:dc1@dc1.example"] },
        },
      });
      await bootOnSource(pair);
      return pair;
    };

    it("admits a client certificate whose subjectAltName names an allowed SIP URI, and moves the VM", async () => {
      const p = await startWith(good.issue("dc1", "IP:127.0.0.1,URI:sip:dc1@dc1.example"));
      const summary = await move(p, { vms: ["router1"] });
      expect(summary.outcome).toBe("completed");
      await expectAllOn(p, "dc2");
    });

    it.each([
      [
        "signed by a CA the destination does not trust",
        () => rogue.issue("dc1", "IP:127.0.0.1,URI:sip:dc1@dc1.example"),
        /no proven identity from 127\.0\.0\.1 \(From sip:dc1@dc1\.example proves nothing/,
      ],
      [
        "naming another SIP URI",
        () => good.issue("mallory", "IP:127.0.0.1,URI:sip:mallory@dc1.example"),
        /sip:mallory@dc1\.example \(certificate\) from 127\.0\.0\.1 is not in this host's allowlist/,
      ],
      [
        "with no SIP URI at all",
        () => good.issue("plain", "IP:127.0.0.1,DNS:dc1.example"),
        /no proven identity from 127\.0\.0\.1/,
      ],
    ])("refuses a client certificate %s: 403, nothing moves", async (_what, issued, why) => {
      const p = await startWith(issued());
      const e = await refusal(move(p, { vms: ["router1"] }));
      expect(e.status).toBe(403);
      expect(e.message).toMatch(why);
      await expectAllOn(p, "dc1");
    });
  });
});
