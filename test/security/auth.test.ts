/**
 * Who may move what, over real SIP: digest on INVITE, INFO and BYE (RFC 8760 SHA-256), nonces
 * that expire and cannot be replayed, and an allowlist that judges the authenticated user, not
 * the From header. Raw requests are written by hand so forged and replayed ones can be sent.
 */
import { parseConfig } from "../../lib/config/load";
import { bootOnSource, expectAllOn, guestDefs, placement, pairPerTest, extraSource, move } from "../harness";
import {
  RawSipClient,
  digestAnswer,
  rawInDialog,
  rawInvite,
  type RawResponse,
  rawOffer,
  sha256Challenge,
} from "./raw-sip";

const offer = rawOffer;

describe("digest authentication over SIP", () => {
  const start = pairPerTest();

  it("challenges INVITE, INFO and BYE of a real migration; the source answers each with SHA-256", async () => {
    const pair = await start(await guestDefs([["router1", "router"]]), {
      dc2: { security: { users: { dc1: "pw-dc1" }, allow: ["sip:dc1@*"] } },
    });
    await bootOnSource(pair);
    const source = await extraSource(pair, { credentials: { username: "dc1", password: "pw-dc1" } });
    const summary = await move(pair, { vms: ["router1"], agent: source.agent });
    await source.stop();
    expect(summary.outcome).toBe("completed");
    await expectAllOn(pair, "dc2");
    const sent = pair.dc2.trace.filter((e) => e.direction === "sent").map((e) => e.message);
    const challenged = sent.filter((m) => m.startsWith("SIP/2.0 401")).map((m) => /CSeq: \d+ (\w+)/.exec(m)?.[1]);
    expect(new Set(challenged)).toEqual(new Set(["INVITE", "INFO", "BYE"]));
    const retried = pair.dc2.trace.filter(
      (e) => e.direction === "received" && /^(INFO|BYE) /.test(e.message) && /^Authorization: Digest/m.test(e.message),
    );
    expect(new Set(retried.map((e) => e.message.slice(0, e.message.indexOf(" "))))).toEqual(new Set(["INFO", "BYE"]));
    expect(sent.some((m) => m.startsWith("SIP/2.0 500"))).toBe(false); // no CSeq went out of order after a challenge
  });

  it("refuses a replayed Authorization and an expired nonce (stale=true) on raw INVITEs", async () => {
    const pair = await start(await guestDefs([["router1", "router"]]), {
      dc2: { security: { users: { dc1: "pw-dc1" }, nonceTtlS: 1 } },
    });
    const port = pair.dc2.sip.listeners[0].port;
    const target = `sip:dc2@127.0.0.1:${port}`;
    const raw = await RawSipClient.udp(port);
    try {
      const first = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("ghost"));
      raw.send(first.text);
      const challenge = sha256Challenge(await raw.final(first.callId));
      const auth = `Authorization: ${digestAnswer(challenge, "dc1", "pw-dc1", "INVITE", target)}`;
      const ok = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("ghost"), [auth]);
      raw.send(ok.text);
      expect((await raw.final(ok.callId))?.status).toBe(488); // authenticated; ghost is not defined here
      const replay = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("ghost"), [auth]);
      raw.send(replay.text);
      const refused = await raw.final(replay.callId);
      expect(refused?.status).toBe(401);
      expect(refused?.header("warning")[0]).toMatch(/replayed request/);
      await new Promise((r) => setTimeout(r, 1300));
      const late = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("ghost"), [
        `Authorization: ${digestAnswer(challenge, "dc1", "pw-dc1", "INVITE", target, "00000002")}`,
      ]);
      raw.send(late.text);
      const expired = await raw.final(late.callId);
      expect(expired?.status).toBe(401);
      expect(expired?.header("warning")[0]).toMatch(/nonce expired/);
      expect(sha256Challenge(expired)).toMatch(/stale=true/);
    } finally {
      raw.close();
    }
  });

  it("judges the authenticated user, not the From; in-dialog INFO/BYE need the INVITE's user", async () => {
    const pair = await start(await guestDefs([["router1", "router"]]), {
      dc2: { security: { users: { dc1: "pw-dc1", mallory: "pw-m" }, allow: ["sip:dc1@*"] } },
    });
    const port = pair.dc2.sip.listeners[0].port;
    const target = `sip:dc2@127.0.0.1:${port}`;
    const raw = await RawSipClient.udp(port);
    const challengeFor = async (): Promise<string> => {
      const probe = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("ghost"));
      raw.send(probe.text);
      return sha256Challenge(await raw.final(probe.callId));
    };
    try {
      // mallory claims to be dc1 in From: refused on the authenticated identity
      const forged = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("router1"), [
        `Authorization: ${digestAnswer(await challengeFor(), "mallory", "pw-m", "INVITE", target)}`,
      ]);
      raw.send(forged.text);
      const denied = await raw.final(forged.callId);
      expect(denied?.status).toBe(403);
      expect(denied?.header("warning")[0]).toMatch(
        /sip:mallory@127\.0\.0\.1 \(digest\) from 127\.0\.0\.1 is not in this host.s allowlist/,
      );
      expect(placement(pair).router1).toEqual([]);

      // dc1 opens a dialog (router1 armed on dc2) ...
      const inv = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("router1"), [
        `Authorization: ${digestAnswer(await challengeFor(), "dc1", "pw-dc1", "INVITE", target)}`,
      ]);
      raw.send(inv.text);
      const ok = await raw.final(inv.callId, 15000);
      expect(ok?.status).toBe(200);
      expect(placement(pair).router1).toEqual(["dc2"]);
      const inDialog = (method: string, cseq: number, extra: string[] = []): string =>
        rawInDialog(inv, ok, method, cseq, { localPort: raw.localPort, extra });
      raw.send(inDialog("ACK", 1));
      const reply = async (text: string): Promise<RawResponse | undefined> => {
        raw.send(text);
        return raw.final(inv.callId, 3000, /CSeq: (\d+ \w+)/.exec(text)?.[1]);
      };
      // ... mallory's BYE in that dialog: 403, and router1 stays armed
      const malloryBye = await reply(
        inDialog("BYE", 2, [`Authorization: ${digestAnswer(await challengeFor(), "mallory", "pw-m", "BYE", target)}`]),
      );
      expect(malloryBye?.status).toBe(403);
      // a BYE without credentials: challenged (the dialog survives the challenge)
      const bare = await reply(inDialog("BYE", 3));
      expect(bare?.status).toBe(401);
      expect(placement(pair).router1).toEqual(["dc2"]);
      // dc1's BYE: 200, and the listener is gone
      const bye = await reply(
        inDialog("BYE", 4, [`Authorization: ${digestAnswer(sha256Challenge(bare), "dc1", "pw-dc1", "BYE", target)}`]),
      );
      expect(bye?.status).toBe(200);
      expect(placement(pair).router1).toEqual([]);
    } finally {
      raw.close();
    }
  });

  it(
    "digestRequired=false: a caller without credentials is judged by the allowlist, wrong " +
      "credentials still get 401",
    async () => {
      const pair = await start(await guestDefs([["router1", "router"]]), {
        dc2: { security: { users: { dc1: "pw-dc1" }, digestRequired: false } },
      });
      const port = pair.dc2.sip.listeners[0].port;
      const target = `sip:dc2@127.0.0.1:${port}`;
      const raw = await RawSipClient.udp(port);
      try {
        const plain = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("ghost"));
        raw.send(plain.text);
        expect((await raw.final(plain.callId))?.status).toBe(488);
        const fake =
          'Digest username="dc1", realm="sip-teleport", nonce="x.y", uri="sip:x", response="00", ' +
          'algorithm=SHA-256, qop=auth, nc=00000001, cnonce="1"';
        const wrong = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("ghost"), [`Authorization: ${fake}`]);
        raw.send(wrong.text);
        expect((await raw.final(wrong.callId))?.status).toBe(401);
      } finally {
        raw.close();
      }
    },
  );

  it("config: digestRequired without any user is refused with the field named", () => {
    expect(() => parseConfig({ security: { digestRequired: true } })).toThrow(
      /security\.digestRequired: security\.digestRequired needs at least one entry in security\.users/,
    );
  });
});
