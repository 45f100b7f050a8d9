import { createHash } from "node:crypto";
import { DigestServer, parseDigestHeader } from "../../lib/sip/digest";

const h = (alg: string, s: string) =>
  createHash(alg === "MD5" ? "md5" : "sha256")
    .update(s)
    .digest("hex");

/** A client's Authorization header computed the RFC 7616 way, independently of the server code. */
function answer(
  challenge: string,
  user: string,
  password: string,
  method: string,
  uri: string,
  nc = "00000001",
): string {
  const c = parseDigestHeader(challenge);
  const alg = c.algorithm;
  const cnonce = "0a4f113b";
  const ha1 = h(alg, `${user}:${c.realm}:${password}`);
  const ha2 = h(alg, `${method}:${uri}`);
  const response = h(alg, `${ha1}:${c.nonce}:${nc}:${cnonce}:auth:${ha2}`);
  return (
    `Digest username="${user}", realm="${c.realm}", nonce="${c.nonce}", uri="${uri}", ` +
    `response="${response}", algorithm=${alg}, qop=auth, nc=${nc}, cnonce="${cnonce}"`
  );
}

describe("digest server", () => {
  const server = new DigestServer({ realm: "sip-teleport", users: { dc1: "pw-dc1" }, nonceTtlMs: 1000 });

  const legacy = new DigestServer({ realm: "sip-teleport", users: { dc1: "pw-dc1" }, algorithms: ["SHA-256", "MD5"] });

  it("offers SHA-256 only by default; a legacy config offers SHA-256 before MD5 (RFC 8760)", () => {
    expect(server.challenges().map((c) => parseDigestHeader(c).algorithm)).toEqual(["SHA-256"]);
    expect(legacy.challenges().map((c) => parseDigestHeader(c).algorithm)).toEqual(["SHA-256", "MD5"]);
  });

  it.each([0, 1])("accepts a correct response (legacy challenge %i)", (i) => {
    const ch = legacy.challenges()[i];
    expect(legacy.verify(answer(ch, "dc1", "pw-dc1", "INVITE", "sip:dc2@127.0.0.1"), "INVITE")).toEqual({
      ok: true,
      user: "dc1",
    });
  });

  it("refuses a wrong password, an unknown user (same reason; the log tells them apart), a forged nonce", () => {
    const ch = server.challenges()[0];
    expect(server.verify(answer(ch, "dc1", "nope", "INVITE", "sip:a"), "INVITE")).toMatchObject({
      ok: false,
      reason: "wrong user name or password",
      detail: 'wrong password for "dc1"',
    });
    expect(server.verify(answer(ch, "eve", "pw", "INVITE", "sip:a"), "INVITE")).toMatchObject({
      ok: false,
      reason: "wrong user name or password",
      detail: 'unknown user "eve"',
    });
    const forged = ch.replace(/nonce="[^"]+"/, 'nonce="lx0.AAAAAAAAAAAAAAAAAAAAAA"');
    expect(server.verify(answer(forged, "dc1", "pw-dc1", "INVITE", "sip:a"), "INVITE")).toMatchObject({
      ok: false,
      reason: "nonce not issued by this host",
    });
    expect(server.verify(undefined, "INVITE")).toMatchObject({ ok: false, reason: "authentication required" });
  });

  it("refuses a response computed for another method", () => {
    const ch = server.challenges()[0];
    expect(server.verify(answer(ch, "dc1", "pw-dc1", "BYE", "sip:a"), "INVITE")).toMatchObject({ ok: false });
  });

  it("refuses a replayed request, accepts the next nonce count", () => {
    const ch = server.challenges()[0];
    const auth = answer(ch, "dc1", "pw-dc1", "INVITE", "sip:a");
    expect(server.verify(auth, "INVITE").ok).toBe(true);
    expect(server.verify(auth, "INVITE")).toMatchObject({ ok: false, reason: expect.stringMatching(/replayed/) });
    expect(server.verify(answer(ch, "dc1", "pw-dc1", "INVITE", "sip:a", "00000002"), "INVITE").ok).toBe(true);
  });

  it("refuses credentials computed for another Request-URI (400), accepts the same URI however it is spelled", () => {
    const ch = server.challenges()[0];
    const auth = answer(ch, "dc1", "pw-dc1", "INVITE", "sip:dc2@other.example");
    expect(server.verify(auth, "INVITE", ["sip:dc2@127.0.0.1:5080"])).toMatchObject({
      ok: false,
      badRequest: true,
      reason: 'digest uri "sip:dc2@other.example" does not match the Request-URI sip:dc2@127.0.0.1:5080',
    });
    const same = answer(ch, "dc1", "pw-dc1", "INVITE", "sip:dc2@Host.Example:5080", "00000002");
    expect(server.verify(same, "INVITE", ["sip:dc2@host.example:5080"]).ok).toBe(true);
  });

  it("refuses an expired nonce as stale", () => {
    const ch = server.challenges()[0];
    const auth = answer(ch, "dc1", "pw-dc1", "INVITE", "sip:a");
    expect(server.verify(auth, "INVITE", [], Date.now() + 5000)).toMatchObject({
      ok: false,
      stale: true,
      reason: "nonce expired",
    });
  });
});
