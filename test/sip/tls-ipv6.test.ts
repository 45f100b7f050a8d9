/** TLS loopback between two of our agents (self-signed certificate made by openssl now), and IPv6. */
import fs from "node:fs";
import type { SipJsBackend } from "../../lib/sip";
import { selfSigned } from "../security/certs";
import { ANSWER, NRDL, OFFER, answerEverything, listenerPort, startAgent, tempDir } from "./helpers";

/** A self-signed certificate for 127.0.0.1 and localhost, as PEM text. */
function selfSignedPem(dir: string): { cert: string; key: string } {
  const files = selfSigned(dir, "localhost", "localhost", "IP:127.0.0.1,DNS:localhost");
  return { cert: fs.readFileSync(files.cert, "utf8"), key: fs.readFileSync(files.key, "utf8") };
}

async function callAndHangUp(a: SipJsBackend, b: SipJsBackend, target: string): Promise<void> {
  const seen = answerEverything(b);
  const { dialog, response } = await a.invite(target, { contentType: NRDL, content: OFFER }).established;
  expect(response.body?.content).toBe(ANSWER);
  expect((await dialog.info({ contentType: NRDL, content: "<status/>" })).status).toBe(200);
  expect((await dialog.bye()).status).toBe(200);
  expect(seen).toMatchObject({ invites: 1, infos: 1, byes: 1 });
}

describe("TLS and IPv6", () => {
  const agents: SipJsBackend[] = [];
  afterEach(async () => {
    for (const a of agents.splice(0)) await a.stop();
  });

  it("calls over TLS with a verified self-signed certificate, by host name", async () => {
    const dir = tempDir("tls");
    try {
      const { cert, key } = selfSignedPem(dir);
      const tls = { cert, key, ca: cert };
      const a = await startAgent("dc1", ["tls"], { tls });
      const b = await startAgent("dc2", ["tls"], { tls });
      agents.push(a, b);
      await callAndHangUp(a, b, `sip:dc2@localhost:${listenerPort(b, "tls")};transport=tls`);
      expect(a.contactFor("tls")).toBe(`sip:dc1@127.0.0.1:${listenerPort(a, "tls")};transport=tls`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses a TLS peer whose certificate it cannot verify", async () => {
    const dir = tempDir("tls");
    try {
      const { cert, key } = selfSignedPem(dir);
      const a = await startAgent("dc1", ["tls"], { tls: { cert, key } }); // no CA: the system store does not know it
      const b = await startAgent("dc2", ["tls"], { tls: { cert, key, ca: cert } });
      agents.push(a, b);
      answerEverything(b);
      await expect(
        a.invite(`sip:dc2@127.0.0.1:${listenerPort(b, "tls")};transport=tls`, { contentType: NRDL, content: OFFER })
          .established,
      ).rejects.toMatchObject({ status: 503 });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each(["udp", "tcp"] as const)("calls over IPv6 loopback (%s)", async (kind) => {
    const a = await startAgent("dc1", [kind], { listen: [{ transport: kind, host: "::1", port: 0 }] });
    const b = await startAgent("dc2", [kind], { listen: [{ transport: kind, host: "::1", port: 0 }] });
    agents.push(a, b);
    await callAndHangUp(a, b, `sip:dc2@[::1]:${listenerPort(b, kind)}${kind === "tcp" ? ";transport=tcp" : ""}`);
  });
});
