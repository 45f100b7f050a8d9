import { AccessPolicy } from "../../lib/access/allowlist";
import { DestinationPolicy } from "../../lib/access/destinations";
import { assertedUris, provenIdentities, type ProvenIdentity } from "../../lib/access/identity";
import { dialogAdmission, inDialogRefusal, unprovableDialog } from "../../lib/access/in-dialog";
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
  it("admits no one when nothing is configured: loopback is no identity", () => {
    const p = new AccessPolicy([]);
    for (const address of ["127.0.0.1", "::1", "::ffff:127.0.0.5", "10.0.0.9"])
      expect(p.check({ address, fromUri: "sip:anyone@x", identities: [] })).toMatch(/security\.allow is empty/);
    const proven = [{ uri: "sip:dc1@x", proof: "digest" as const }];
    expect(p.check({ address: "127.0.0.1", fromUri: "sip:dc1@x", identities: proven })).toMatch(/is empty/);
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

describe("in-dialog requests are held to what admitted the INVITE", () => {
  const policy = new AccessPolicy(["10.0.0.0/24", "sip:dc1@*"]);
  const judged = (req: IncomingRequest, user?: string, proxies: string[] = []) => {
    const verdict = policy.judge({
      address: req.source.address,
      fromUri: req.fromUri,
      identities: provenIdentities(req, user, proxies),
    });
    if ("denied" in verdict) throw new Error(verdict.denied);
    return dialogAdmission(req, verdict, proxies);
  };
  const withCert = (address: string, uris: string[]) => {
    const req = request(address, "sip:x@y");
    req.source.certificate = { subject: "CN=x", sipUris: uris };
    return req;
  };

  it("address: only the address that was admitted, not any other the allowlist admits", () => {
    const a = judged(request("10.0.0.5", "sip:x@y"));
    expect(a).toEqual({ by: "address", peer: "10.0.0.5" });
    expect(inDialogRefusal(request("10.0.0.5", "sip:x@y"), a, [], false)).toBeUndefined();
    expect(inDialogRefusal(request("10.0.0.9", "sip:x@y"), a, [], false)).toMatch(
      /admitted by the address 10\.0\.0\.5/,
    );
    expect(inDialogRefusal(request("192.0.2.9", "sip:x@y"), a, [], false)).toMatch(/admitted by the address/);
  });

  it("certificate: the same SIP URI from a verified certificate, never the same URI by another proof", () => {
    const a = judged(withCert("192.0.2.9", ["sip:dc1@dc1.example"]));
    expect(inDialogRefusal(withCert("192.0.2.7", ["sip:dc1@dc1.example"]), a, [], false)).toBeUndefined();
    expect(inDialogRefusal(withCert("192.0.2.9", ["sip:dc1@other.example"]), a, [], false)).toMatch(
      /proves sip:dc1@other\.example \(certificate\), but sip:dc1@dc1\.example \(certificate\) opened/,
    );
    const pai = { "p-asserted-identity": "<sip:dc1@dc1.example>" };
    expect(inDialogRefusal(request("192.0.2.1", "sip:x@y", pai), a, ["192.0.2.1"], false)).toMatch(
      /proves sip:dc1@dc1\.example \(proxy\)/,
    );
  });

  it("proxy: the same assertion from a trusted proxy, or nothing asserted from the proxy that record-routed", () => {
    const proxies = ["192.0.2.1", "192.0.2.2"];
    const pai = (uri: string) => ({ "p-asserted-identity": `<${uri}>` });
    const invite = request("192.0.2.1", "sip:x@y", { ...pai("sip:dc1@ops"), "record-route": "<sip:192.0.2.1;lr>" });
    const a = judged(invite, undefined, proxies);
    expect(a).toEqual({
      by: "identity",
      peer: "192.0.2.1",
      identities: [{ uri: "sip:dc1@ops", proof: "proxy" }],
      relay: "192.0.2.1",
    });
    expect(unprovableDialog(a)).toBeUndefined();
    expect(inDialogRefusal(request("192.0.2.2", "sip:x@y", pai("sip:dc1@ops")), a, proxies, false)).toBeUndefined();
    expect(inDialogRefusal(request("192.0.2.1", "sip:x@y"), a, proxies, false)).toBeUndefined();
    expect(inDialogRefusal(request("192.0.2.2", "sip:x@y"), a, proxies, false)).toMatch(/proves no identity/);
    expect(inDialogRefusal(request("192.0.2.1", "sip:x@y", pai("sip:dc1@x")), a, proxies, false)).toMatch(
      /proves sip:dc1@x \(proxy\)/,
    );
    expect(inDialogRefusal(request("192.0.2.9", "sip:x@y", pai("sip:dc1@ops")), a, proxies, false)).toMatch(
      /from 192\.0\.2\.9 over UDP proves no identity/,
    );
    const direct = judged(request("192.0.2.1", "sip:x@y", pai("sip:dc1@ops")), undefined, proxies);
    expect(unprovableDialog(direct)).toMatch(/did not Record-Route/);
  });

  it("digest: the re-challenge (security.digestInDialog), else the admitted peer's address", () => {
    const a = judged(request("192.0.2.9", "sip:x@y"), "dc1");
    expect(inDialogRefusal(request("192.0.2.8", "sip:x@y"), a, [], true)).toBeUndefined();
    expect(inDialogRefusal(request("192.0.2.9", "sip:x@y"), a, [], false)).toBeUndefined();
    expect(inDialogRefusal(request("192.0.2.8", "sip:x@y"), a, [], false)).toMatch(/digestInDialog is off/);
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

  it("drachtio backend: refuses client certificates as identities (drachtio-server never passes them on)", () => {
    const tls = { cert: "c.pem", key: "k.pem", clientCa: "ca.pem" };
    const drachtio = { host: "127.0.0.1", port: 9022, secretEnv: "DRACHTIO_SECRET" };
    const listen = [{ transport: "tls", address: "127.0.0.1", port: 5061 }];
    const sip = { backend: "drachtio", drachtio, listen, tls };
    expect(() => parseConfig({ sip, security: { users: { dc1: "pw" } } })).toThrow(
      /sip\.tls\.clientCa: sip\.backend "drachtio" cannot take identities from client certificates/,
    );
    // the same URI entry that a client certificate proves on sip.js has nothing to prove it on drachtio
    const { clientCa: _ca, ...serverOnly } = tls;
    expect(() =>
      parseConfig({ sip: { ...sip, tls: serverOnly }, security: { allow: ["sip:dc1@dc1.example"] } }),
    ).toThrow(/a SIP URI entry matches only a proven identity/);
    expect(() => parseConfig({ sip: { listen, tls }, security: { allow: ["sip:dc1@dc1.example"] } })).not.toThrow();
  });

  it("refuses console destinations that security.destinations forbids", () => {
    expect(() => parseConfig({ console: { destinations: ["sip:dc2@10.0.0.2"] } })).toThrow(
      /console\.destinations\.0: sip:dc2@10\.0\.0\.2 is not a permitted destination/,
    );
  });
});
