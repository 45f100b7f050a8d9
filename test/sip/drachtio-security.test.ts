/**
 * The sip.js backend's defences, on a real drachtio-server where it allows them: the INVITE rate
 * limit for strangers (503 + Retry-After before the agent's handler runs; trusted proxies exempt),
 * and TLS on the inter-DC path, the drachtio-server's certificate verified by a sip.js source.
 */
import fs from "node:fs";
import { TeleportError } from "../../lib/errors";
import { createSipBackend, type SipJsBackend } from "../../lib/sip";
import { DEFAULT_LIMITS, type SipLimits } from "../../lib/sip/config";
import { DrachtioBackend } from "../../lib/sip/drachtio-backend";
import { startDrachtioServer, type DrachtioServer } from "../../lib/sip/drachtio/server-process";
import { makeCa } from "../security/certs";
import { RawSipClient, rawInvite } from "../security/raw-sip";
import { tempDir } from "./helpers";
import { describeDrachtio } from "../harness/drachtio";

jest.setTimeout(30_000);

const NRDL = { contentType: "application/nrdl+xml", content: "<nrdl/>" };

describeDrachtio("drachtio backend: defences on drachtio-server", () => {
  const started: Array<{ stop(): Promise<void> }> = [];
  afterEach(async () => {
    for (const s of started.splice(0).reverse()) await s.stop();
  });

  async function destination(server: DrachtioServer, limits: Partial<SipLimits>): Promise<{ invites: () => number }> {
    const uas = new DrachtioBackend({
      aor: "sip:dc2@127.0.0.1",
      listen: [],
      limits: { ...DEFAULT_LIMITS, ...limits },
      drachtio: { host: server.address, port: server.adminPort, secret: server.secret },
    });
    let invites = 0;
    uas.setHandlers({
      onInvite: (_req, res) => {
        invites++;
        res.reject(new TeleportError(488, "Not Acceptable Here", ["ghost: not defined on this host"]));
      },
    });
    await uas.start();
    started.push(uas);
    return { invites: () => invites };
  }

  it("answers INVITEs over limits.invitesPerSecond from one address 503 + Retry-After, before the agent", async () => {
    const server = await startDrachtioServer();
    started.push(server);
    const dest = await destination(server, { invitesPerSecond: 2, trustedProxies: ["127.0.0.2"] });
    const target = `sip:dc2@127.0.0.1:${server.sipPort}`;
    const flood = async (from: string): Promise<Array<{ status?: number; retryAfter?: string; warning?: string }>> => {
      const raw = await RawSipClient.udp(server.sipPort, "127.0.0.1", from);
      try {
        const sent = Array.from({ length: 8 }, () => rawInvite(target, "sip:x@127.0.0.1", raw.localPort, NRDL.content));
        sent.forEach((i) => raw.send(i.text));
        const answers = await Promise.all(sent.map((i) => raw.final(i.callId)));
        return answers.map((a) => ({
          status: a?.status,
          retryAfter: a?.header("retry-after")[0],
          warning: a?.header("warning")[0],
        }));
      } finally {
        raw.close();
      }
    };
    const stranger = await flood("127.0.0.1");
    const limited = stranger.filter((a) => a.status === 503);
    expect(limited.length).toBeGreaterThanOrEqual(5);
    expect(limited[0]).toMatchObject({ retryAfter: expect.stringMatching(/^\d+$/) });
    expect(limited[0].warning).toMatch(/more than 2 INVITEs per second from 127\.0\.0\.1/);
    expect(stranger.filter((a) => a.status === 488).length + limited.length).toBe(8);
    expect(dest.invites()).toBe(8 - limited.length); // the limited ones never reached the agent
    // a trusted proxy relays many callers: the agent counts those per caller, the stack lets them through
    expect((await flood("127.0.0.2")).map((a) => a.status)).toEqual(Array(8).fill(488));
  });

  describe("TLS on the inter-DC path", () => {
    const dir = tempDir("drachtio-tls");
    const ca = makeCa(dir, "dtls");
    const rogue = makeCa(dir, "rogue");
    afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

    const source = async (trusted: string): Promise<SipJsBackend> => {
      const mine = ca.issue("dc1", "IP:127.0.0.1");
      const uac = createSipBackend({
        aor: "sip:dc1@127.0.0.1",
        listen: [{ transport: "tls", host: "127.0.0.1", port: 0 }],
        tls: {
          cert: fs.readFileSync(mine.cert, "utf8"),
          key: fs.readFileSync(mine.key, "utf8"),
          ca: fs.readFileSync(trusted, "utf8"),
        },
      });
      await uac.start();
      started.push(uac);
      return uac;
    };

    it("a sip.js source verifies drachtio-server's certificate, calls over TLS; an untrusted one fails", async () => {
      const server = await startDrachtioServer({ tls: ca.issue("dc2", "IP:127.0.0.1") });
      started.push(server);
      const uas = new DrachtioBackend({
        aor: "sip:dc2@127.0.0.1",
        listen: [],
        drachtio: { host: server.address, port: server.adminPort, secret: server.secret },
      });
      let transport: string | undefined;
      uas.setHandlers({
        onInvite: (req, res) => {
          transport = req.source.transport;
          res.accept(NRDL);
        },
      });
      await uas.start();
      started.push(uas);
      const target = `sip:dc2@127.0.0.1:${server.tlsPort};transport=tls`;

      const { dialog } = await (await source(ca.ca)).invite(target, NRDL).established;
      expect(transport).toBe("tls");
      expect((await dialog.bye()).status).toBe(200);

      const refused = await (
        await source(rogue.ca)
      )
        .invite(target, NRDL)
        .established.catch((e: unknown) => TeleportError.from(e));
      expect(refused).toBeInstanceOf(TeleportError);
      expect((refused as TeleportError).message).toMatch(/cannot connect over TLS/);
    });
  });
});
