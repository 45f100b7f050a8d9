/**
 * The grammar built once (lib/sip/grammar-cache.ts) parses exactly as sip.js' own, rebuilt-per-call
 * grammar: the same value, the same class instances, the same refusals, for every start rule the
 * core uses, on generated SIP messages, on mangled ones and on noise.
 */
import fc from "fast-check";
import { Core, Grammar } from "sip.js";
import { freshSipJsParse, rewriteGrammar, useCachedSipGrammar, useSipJsGrammar } from "../../lib/sip/grammar-cache";

const quietLogger = { error: () => undefined, warn: () => undefined, log: () => undefined, debug: () => undefined };

const token = fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'~-]{0,11}$/);
const host = fc.oneof(
  fc.domain(),
  fc.ipV4(),
  fc.ipV6().map((a) => `[${a}]`),
  fc.constantFrom("127.0.0.1", "dc2.teleport.example", "[::1]", "host_with_underscore"),
);
const port = fc.option(fc.integer({ min: 0, max: 70000 }), { nil: undefined });
const param = fc.tuple(
  fc.oneof(token, fc.constantFrom("transport", "lr", "tag", "branch", "rport", "received", "maddr", "ttl", "q")),
  fc.option(fc.oneof(token, host, fc.constantFrom("tcp", "udp", "tls", "0.5", "1.0", "")), { nil: undefined }),
);
const params = fc
  .array(param, { maxLength: 3 })
  .map((ps) => ps.map(([k, v]) => `;${k}${v === undefined ? "" : `=${v}`}`).join(""));
const uri = fc
  .tuple(fc.constantFrom("sip", "sips", "tel", "SIP"), fc.option(token, { nil: undefined }), host, port, params)
  .map(([scheme, user, h, p, ps]) => `${scheme}:${user ? `${user}@` : ""}${h}${p === undefined ? "" : `:${p}`}${ps}`);
const display = fc.oneof(
  fc.constant(""),
  token.map((t) => `${t} `),
  fc.string({ maxLength: 10 }).map((t) => `"${t.replace(/["\\\r\n]/g, "")}" `),
);
const nameAddr = fc
  .tuple(display, uri, params, fc.boolean())
  .map(([d, u, ps, angle]) => (angle || d ? `${d}<${u}>${ps}` : `${u}`));
const via = fc
  .tuple(fc.constantFrom("UDP", "TCP", "TLS", "WS", "SCTP", "udp"), host, port, params, token)
  .map(([t, h, p, ps, b]) => `SIP/2.0/${t} ${h}${p === undefined ? "" : `:${p}`};branch=z9hG4bK${b}${ps}`);
const method = fc.constantFrom("INVITE", "ACK", "BYE", "CANCEL", "INFO", "OPTIONS", "MESSAGE", "REGISTER", "FOO");
const challenge = fc
  .tuple(fc.constantFrom("Digest", "digest", "Basic"), token, token, fc.constantFrom("MD5", "SHA-256", "md5-sess"))
  .map(([s, realm, nonce, alg]) => `${s} realm="${realm}", nonce="${nonce}", algorithm=${alg}, qop="auth"`);

/** Header name and a value that is well-formed or nearly so, for the rules sip.js' parser uses. */
const headers: Record<string, fc.Arbitrary<string>> = {
  Via: fc.array(via, { minLength: 1, maxLength: 2 }).map((v) => v.join(", ")),
  From: nameAddr,
  To: nameAddr,
  "Call-ID": fc.tuple(token, fc.option(host, { nil: undefined })).map(([a, h]) => (h ? `${a}@${h}` : a)),
  CSeq: fc.tuple(fc.integer({ min: -1, max: 2 ** 32 }), method).map(([n, m]) => `${n} ${m}`),
  Contact: fc.oneof(
    fc.constant("*"),
    fc.array(nameAddr, { minLength: 1, maxLength: 3 }).map((c) => c.join(", ")),
  ),
  "Record-Route": fc.array(nameAddr, { minLength: 1, maxLength: 3 }).map((c) => c.join(", ")),
  "Max-Forwards": fc.integer({ min: -5, max: 300 }).map(String),
  "Content-Type": fc.tuple(token, token, params).map(([t, s, ps]) => `${t}/${s}${ps}`),
  "Content-Length": fc.integer({ min: 0, max: 99 }).map(String),
  "WWW-Authenticate": challenge,
  "Proxy-Authenticate": challenge,
  "Refer-To": nameAddr,
  "Session-Expires": fc.tuple(fc.nat(9999), params).map(([n, ps]) => `${n}${ps}`),
  Supported: fc.array(token, { maxLength: 3 }).map((t) => t.join(", ")),
  Event: fc.tuple(token, params).map(([t, ps]) => `${t}${ps}`),
  "X-Other": fc.string({ maxLength: 20 }),
};

/** Cut, duplicate or splice SIP punctuation into a text at random places. */
function mangle(text: fc.Arbitrary<string>): fc.Arbitrary<string> {
  const bits = fc.oneof(
    fc.constantFrom("<", ">", ";", ":", "@", '"', ",", "=", "/", " ", "\r\n", "[", "]"),
    fc.string({ maxLength: 4 }),
  );
  return fc.tuple(text, fc.array(fc.tuple(fc.nat(), fc.nat({ max: 6 }), bits), { maxLength: 3 })).map(([t, edits]) =>
    edits.reduce((s, [at, cut, insert]) => {
      const i = at % (s.length + 1);
      return s.slice(0, i) + insert + s.slice(i + cut);
    }, t),
  );
}

const startLine = fc.oneof(
  fc.tuple(method, uri).map(([m, u]) => `${m} ${u} SIP/2.0`),
  fc
    .tuple(fc.integer({ min: 100, max: 699 }), fc.string({ maxLength: 12 }))
    .map(([c, r]) => `SIP/2.0 ${c} ${r.replace(/[\r\n]/g, "")}`),
);
const message = fc
  .tuple(
    mangle(startLine),
    fc.array(
      fc.constantFrom(...Object.keys(headers)).chain((name) => fc.tuple(fc.constant(name), mangle(headers[name]))),
      { maxLength: 12 },
    ),
    fc.string({ maxLength: 30 }),
  )
  .map(([first, hs, body]) => `${first}\r\n${hs.map(([n, v]) => `${n}: ${v}`).join("\r\n")}\r\n\r\n${body}`);

/** A parsed message with every header parsed too (sip.js parses most lazily), or how parsing failed. */
function parsedMessage(text: string): unknown {
  try {
    const m = Core.Parser.parseMessage(text, quietLogger as never);
    if (!m) return "unparsable";
    for (const name of Object.keys(m.headers))
      for (let i = (m.headers[name] as unknown[]).length - 1; i >= 0; i--) m.parseHeader(name, i);
    return m;
  } catch (err) {
    return `threw ${String(err)}`;
  }
}

describe("sip.js grammar built once", () => {
  afterAll(() => {
    useCachedSipGrammar(); // what every backend installs at start
  });

  it("rewrites the installed sip.js' generated grammar and replaces Grammar.parse", () => {
    useSipJsGrammar();
    expect(Grammar.parse).toBe(freshSipJsParse);
    expect(useCachedSipGrammar()).toEqual({ cached: true });
    expect(Grammar.parse).not.toBe(freshSipJsParse);
  });

  it("refuses a grammar file whose layout it does not know, saying where", () => {
    expect(() => rewriteGrammar("export const parse = peg$parse;")).toThrow(/import NameAddrHeader: expected once/);
  });

  it("gives the same value as sip.js' own parse for every rule, on generated, mangled and random text", () => {
    useCachedSipGrammar();
    const rules = Object.keys(headers)
      .filter((n) => n !== "X-Other")
      .map((n) => n.replace(/-/g, "_"));
    const input = fc.oneof(
      ...Object.values(headers).map(mangle),
      mangle(startLine),
      mangle(uri),
      fc.string({ maxLength: 60 }),
      fc.string({ unit: "binary", maxLength: 40 }),
    );
    const rule = fc.constantFrom(
      ...rules,
      "Request_Response",
      "SIP_URI",
      "Name_Addr_Header",
      "absoluteURI",
      "NoSuchRule",
    );
    fc.assert(
      fc.property(input, rule, (text, r) => {
        expect(Grammar.parse(text, r)).toStrictEqual(freshSipJsParse(text, r));
      }),
      { numRuns: 1500 },
    );
  });

  it("parses whole generated messages exactly as sip.js does (start line, every header, body)", () => {
    fc.assert(
      fc.property(message, (text) => {
        useSipJsGrammar();
        const fresh = parsedMessage(text);
        useCachedSipGrammar();
        expect(parsedMessage(text)).toStrictEqual(fresh);
      }),
      { numRuns: 600 },
    );
  });

  it("accepts the common case: a well-formed INVITE parses to the expected values", () => {
    useCachedSipGrammar();
    const m = parsedMessage(
      [
        "INVITE sip:dc2@10.0.0.2:5060;transport=tcp SIP/2.0",
        "Via: SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bK77;rport",
        'From: "dc1" <sip:dc1@operator.example>;tag=a1',
        "To: <sip:dc2@operator.example>",
        "Call-ID: c1@10.0.0.1",
        "CSeq: 7 INVITE",
        "Contact: <sip:dc1@10.0.0.1:5070;transport=tcp>;expires=60",
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n"),
    ) as Core.IncomingRequestMessage;
    expect(m.method).toBe("INVITE");
    expect(m.ruri?.port).toBe(5060);
    expect(m.ruri?.getParam("transport")).toBe("tcp");
    expect(m.parseHeader("via").transport).toBe("TCP");
    expect(m.viaBranch).toBe("z9hG4bK77");
    expect(m.from.displayName).toBe("dc1");
    expect(m.fromTag).toBe("a1");
    expect(m.cseq).toBe(7);
    expect(m.parseHeader("contact").getParam("expires")).toBe("60");
  });
});
