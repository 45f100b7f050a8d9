/**
 * Digest is SHA-256 with qop=auth unless the config says a legacy peer needs less: an MD5 answer and
 * an RFC 2069 answer (no qop, no client nonce) are refused over real SIP by default, accepted once
 * `security.digestAlgorithms` / `security.allowLegacyDigest` allow them, and `config check` names both.
 */
import { createHash, randomBytes } from "node:crypto";
import { configWarnings } from "../../agents/commands/config";
import { parseConfig } from "../../lib/config/load";
import { parseDigestHeader } from "../../lib/sip/digest";
import { buildNrdl, offerDocument } from "../../nrdl";
import { guestDefs, pairPerTest } from "../harness";
import { RawSipClient, digestAnswer, rawInvite, type RawResponse } from "./raw-sip";

const offer = buildNrdl(
  offerDocument({
    id: "mig-legacy",
    sourceUri: "sip:dc1@127.0.0.1",
    destinationUri: "sip:dc2@127.0.0.1",
    vms: [{ name: "ghost", memoryMib: 96 }],
  }),
);

/** An answer computed as an RFC 2069 / MD5 client would: `qop` false leaves out qop, cnonce and nc. */
function legacyAnswer(challenge: string, alg: "MD5" | "SHA-256", qop: boolean, uri: string): string {
  const c = parseDigestHeader(challenge);
  const h = (s: string) =>
    createHash(alg === "MD5" ? "md5" : "sha256")
      .update(s)
      .digest("hex");
  const ha1 = h(`dc1:${c.realm}:pw-dc1`);
  const ha2 = h(`INVITE:${uri}`);
  const cnonce = randomBytes(4).toString("hex");
  const response = qop ? h(`${ha1}:${c.nonce}:00000001:${cnonce}:auth:${ha2}`) : h(`${ha1}:${c.nonce}:${ha2}`);
  const base = `Digest username="dc1", realm="${c.realm}", nonce="${c.nonce}", uri="${uri}", response="${response}"`;
  return `${base}, algorithm=${alg}${qop ? `, qop=auth, nc=00000001, cnonce="${cnonce}"` : ""}`;
}

describe("legacy digest answers over SIP", () => {
  const start = pairPerTest();

  async function tryAnswers(security: Record<string, unknown>): Promise<Record<string, number | undefined>> {
    const pair = await start(await guestDefs([["router1", "router"]]), {
      dc2: { security: { users: { dc1: "pw-dc1" }, ...security } },
    });
    const port = pair.dc2.sip.listeners[0].port;
    const target = `sip:dc2@127.0.0.1:${port}`;
    const raw = await RawSipClient.udp(port);
    const challenge = async (): Promise<RawResponse | undefined> => {
      const inv = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer);
      raw.send(inv.text);
      return raw.final(inv.callId);
    };
    try {
      // each answer to a nonce of its own, so that none is refused as a replay of another
      const answers: Record<string, (sha: string, md5: string) => string> = {
        "SHA-256, qop=auth": (sha) => digestAnswer(sha, "dc1", "pw-dc1", "INVITE", target),
        "MD5, qop=auth": (_sha, md5) => legacyAnswer(md5, "MD5", true, target),
        "SHA-256, no qop": (sha) => legacyAnswer(sha, "SHA-256", false, target),
        "MD5, no qop": (_sha, md5) => legacyAnswer(md5, "MD5", false, target),
      };
      const out: Record<string, number | undefined> = {};
      for (const [name, answer] of Object.entries(answers)) {
        const offered = (await challenge())?.header("www-authenticate") ?? [];
        out.offersMd5 = offered.some((c) => /MD5/.test(c)) ? 1 : 0;
        const sha = offered.find((c) => /SHA-256/.test(c)) ?? "";
        // a client set on MD5 answers the MD5 challenge, or the SHA-256 one's nonce when no MD5 is offered
        const md5 = offered.find((c) => /MD5/.test(c)) ?? sha;
        const auth = `Authorization: ${answer(sha, md5)}`;
        const inv = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer, [auth]);
        raw.send(inv.text);
        out[name] = (await raw.final(inv.callId))?.status;
      }
      return out;
    } finally {
      raw.close();
    }
  }

  it("by default: only SHA-256 with qop=auth gets past digest (488: ghost is unknown), the rest 401", async () => {
    expect(await tryAnswers({})).toEqual({
      offersMd5: 0,
      "SHA-256, qop=auth": 488,
      "MD5, qop=auth": 401,
      "SHA-256, no qop": 401,
      "MD5, no qop": 401,
    });
  });

  it("with digestAlgorithms MD5 and allowLegacyDigest: each legacy answer is accepted", async () => {
    expect(await tryAnswers({ digestAlgorithms: ["SHA-256", "MD5"], allowLegacyDigest: true })).toEqual({
      offersMd5: 1,
      "SHA-256, qop=auth": 488,
      "MD5, qop=auth": 488,
      "SHA-256, no qop": 488,
      "MD5, no qop": 488,
    });
  });
});

test("config check names the legacy digest settings, and only them", () => {
  const cfg = (security: Record<string, unknown>) =>
    parseConfig({ host: "dc2", security: { users: { dc1: "pw" }, ...security } });
  const digest = (w: string[]) => w.filter((x) => /digest/i.test(x));
  expect(digest(configWarnings(cfg({})))).toEqual([]);
  expect(digest(configWarnings(cfg({ digestAlgorithms: ["SHA-256", "MD5"] })))).toEqual([
    expect.stringMatching(/^security\.digestAlgorithms includes MD5/),
  ]);
  expect(digest(configWarnings(cfg({ allowLegacyDigest: true })))).toEqual([
    expect.stringMatching(/^security\.allowLegacyDigest is true/),
  ]);
  expect(() => cfg({ digestAlgorithms: ["SHA-1"] })).toThrow(/invalid configuration/);
});
