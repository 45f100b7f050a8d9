import { AccessPolicy } from "../../lib/access/allowlist";
import { DestinationPolicy } from "../../lib/access/destinations";
import { assertedUris, provenIdentities, type ProvenIdentity } from "../../lib/access/identity";
import { bareUri } from "../../lib/access/uri";
import type { IncomingRequest } from "../../lib/sip/backend";
import { parseConfig } from "../../lib/config/load";
import { sipUrisOf } from "../../lib/sip/peer-certificate";

const digest = (uri: string): ProvenIdentity => ({ uri, proof: "digest" });

function request(address: string, from: string, headers: Record<string, string> = {}): IncomingRequest {
  return {
    method: "INVITE",
    ruri: "sip:dc2@10.0.0.2",
    callId: "c",
    fromUri: from,
    toUri: "sip:dc2@10.0.0.2",
    header: (n) => headers[n.toLowerCase()],
    source: { address, port: 5060, transport: "udp" },
  };
}

describe("destination access policy", () => {
  it("allows only loopback when nothing is configured", () => {
    const p = new AccessPolicy([]);
    expect(p.check({ address: "127.0.0.1", fromUri: "sip:anyone@x", identities: [] })).toBeUndefined();
    expect(p.check({ address: "::1", fromUri: "sip:anyone@x", identities: [] })).toBeUndefined();
    expect(p.check({ address: "::ffff:127.0.0.5", fromUri: "sip:anyone@x", identities: [] })).toBeUndefined();
    expect(p.check({ address: "10.0.0.9", fromUri: "sip:dc1@x", identities: [] })).toMatch(/not loopback/);
  });

  it("matches addresses and subnets on the network source, URI patterns on proven identities only", () => {
    const p = new AccessPolicy(["10.10.0.0/24", "sip:dc1@*", "2001:db8::7"]);
    expect(p.check({ address: "10.10.0.66", fromUri: "sip:mallory@evil", identities: [] })).toBeUndefined();
    expect(p.check({ address: "2001:db8::7", fromUri: "sip:x@y", identities: [] })).toBeUndefined();
    expect(p.check({ address: "192.0.2.1", fromUri: "sip:x", identities: [digest("sip:dc1@h")] })).toBeUndefined();
    // the From alone never matches
    expect(p.check({ address: "192.0.2.1", fromUri: "<sip:dc1@10.10.10.66:5060;transport=tcp>", identities: [] })).toBe(
      "no proven identity from 192.0.2.1 (From sip:dc1@10.10.10.66 proves nothing: authenticate with digest, " +
        "a TLS client certificate or through a trusted proxy), and the address is not in this host's allowlist",
    );
    expect(p.check({ address: "192.0.2.1", fromUri: "sip:dc1@h", identities: [digest("sip:dc3@h")] })).toBe(
      "sip:dc3@h (digest) from 192.0.2.1 is not in this host's allowlist",
    );
    // loopback is no longer implicitly allowed once a list is configured
    expect(p.check({ address: "127.0.0.1", fromUri: "sip:dc3@h", identities: [] })).toBeDefined();
  });

  it("does not let regex characters in patterns widen the match", () => {
    const p = new AccessPolicy(["sip:dc1@10.0.0.1"]);
    expect(p.check({ address: "192.0.2.1", fromUri: "x", identities: [digest("sip:dc1@10a0b0c1")] })).toBeDefined();
  });

  it("normalises URIs, IPv6 hosts included", () => {
    expect(bareUri("<SIP:dc1@Host.Example:5061;transport=tls>")).toBe("sip:dc1@host.example");
    expect(bareUri("sip:dc1@[::1]:5060")).toBe("sip:dc1@[::1]");
  });
});

describe("proven identities", () => {
  it("digest replaces the From's user; P-Asserted-Identity counts only from a trusted proxy", () => {
    const pai = { "p-asserted-identity": '"dc one" <sip:dc1@ops.example>, <tel:+15550100>' };
    expect(provenIdentities(request("192.0.2.9", "sip:dc1@h", pai), undefined, [])).toEqual([]);
    expect(provenIdentities(request("192.0.2.9", "sip:dc1@h", pai), undefined, ["192.0.2.9"])).toEqual([
      { uri: "sip:dc1@ops.example", proof: "proxy" },
    ]);
    expect(provenIdentities(request("192.0.2.9", "sip:dc1@h"), "mallory", [])).toEqual([
      { uri: "sip:mallory@h", proof: "digest" },
    ]);
    expect(assertedUris("sip:a@b;user=phone, tel:+1")).toEqual(["sip:a@b"]);
  });

  it("a verified certificate's sip: subjectAltName URIs, nothing else", () => {
    expect(sipUrisOf('DNS:dc1.example, URI:sip:dc1@dc1.example, URI:https://x, URI:"sips:a,b@c"')).toEqual([
      "sip:dc1@dc1.example",
      "sips:a,b@c",
    ]);
    const req = request("192.0.2.9", "sip:x@y");
    req.source.certificate = { subject: "CN=dc1", sipUris: ["sip:dc1@dc1.example"] };
    expect(provenIdentities(req, undefined, [])).toEqual([{ uri: "sip:dc1@dc1.example", proof: "certificate" }]);
  });
});

describe("where VMs may go", () => {
  it("an empty list permits loopback targets only", () => {
    const p = new DestinationPolicy([]);
    expect(p.check("sip:dc2@127.0.0.1:5080")).toBeUndefined();
    expect(p.check("sip:dc2@[::1]:5080;transport=tcp")).toBeUndefined();
    expect(p.check("sip:dc2@10.0.0.2")).toMatch(/security.destinations is empty, which permits loopback only/);
  });

  it("matches patterns on scheme, user and host", () => {
    const p = new DestinationPolicy(["sip:dc2@10.10.10.67", "sip:*@dc.example"]);
    expect(p.check("sip:dc2@10.10.10.67:5060;transport=tls")).toBeUndefined();
    expect(p.check("sip:dc9@DC.example")).toBeUndefined();
    expect(p.check("sip:x@attacker.example")).toBe(
      "sip:x@attacker.example is not a permitted destination " +
        "(security.destinations: sip:dc2@10.10.10.67, sip:*@dc.example)",
    );
  });
});

describe("config: an allowlist URI must be provable", () => {
  it("is refused with what to add when only a From could match it", () => {
    const refusal = () => parseConfig({ security: { allow: ["sip:dc1@ops.example"] } });
    expect(refusal).toThrow(/security\.allow: sip:dc1@ops\.example: a SIP URI entry matches only a proven identity/);
    expect(refusal).toThrow(
      /Add security\.users \(digest\), sip\.tls\.clientCa with a tls listener \(client certificates\), or limits\.tr/,
    );
    expect(() => parseConfig({ security: { allow: ["10.0.0.0/8"] } })).not.toThrow();
    expect(() => parseConfig({ security: { allow: ["sip:dc1@*"], users: { dc1: "pw" } } })).not.toThrow();
    expect(() =>
      parseConfig({ security: { allow: ["sip:dc1@*"] }, limits: { trustedProxies: ["10.0.0.5"] } }),
    ).not.toThrow();
  });

  it("refuses console destinations that security.destinations forbids", () => {
    expect(() => parseConfig({ console: { destinations: ["sip:dc2@10.0.0.2"] } })).toThrow(
      /console\.destinations\.0: sip:dc2@10\.0\.0\.2 is not a permitted destination/,
    );
  });
});
