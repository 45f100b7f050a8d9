import { AccessPolicy, bareUri } from "../../agents/destination/access";

describe("destination access policy", () => {
  it("allows only loopback when nothing is configured", () => {
    const p = new AccessPolicy([]);
    expect(p.check({ address: "127.0.0.1", fromUri: "sip:anyone@x" })).toBeUndefined();
    expect(p.check({ address: "::1", fromUri: "sip:anyone@x" })).toBeUndefined();
    expect(p.check({ address: "::ffff:127.0.0.5", fromUri: "sip:anyone@x" })).toBeUndefined();
    expect(p.check({ address: "10.0.0.9", fromUri: "sip:dc1@x" })).toMatch(/not loopback/);
  });

  it("matches addresses, subnets and URI patterns", () => {
    const p = new AccessPolicy(["10.10.0.0/24", "sip:dc1@*", "2001:db8::7"]);
    expect(p.check({ address: "10.10.0.66", fromUri: "sip:mallory@evil" })).toBeUndefined();
    expect(p.check({ address: "192.0.2.1", fromUri: "<sip:dc1@10.10.10.66:5060;transport=tcp>" })).toBeUndefined();
    expect(p.check({ address: "2001:db8::7", fromUri: "sip:x@y" })).toBeUndefined();
    expect(p.check({ address: "192.0.2.1", fromUri: "sip:dc3@10.10.10.66" })).toMatch(
      /sip:dc3@10\.10\.10\.66 from 192\.0\.2\.1 is not in this host's allowlist/,
    );
    // loopback is no longer implicitly allowed once a list is configured
    expect(p.check({ address: "127.0.0.1", fromUri: "sip:dc3@h" })).toBeDefined();
  });

  it("checks the authenticated user, not the From header", () => {
    const p = new AccessPolicy(["sip:dc1@*"]);
    expect(p.check({ address: "192.0.2.1", fromUri: "sip:dc1@h", authenticatedUser: "intruder" })).toMatch(
      /sip:intruder@h/,
    );
    expect(p.check({ address: "192.0.2.1", fromUri: "sip:whoever@h", authenticatedUser: "dc1" })).toBeUndefined();
  });

  it("does not let regex characters in patterns widen the match", () => {
    const p = new AccessPolicy(["sip:dc1@10.0.0.1"]);
    expect(p.check({ address: "192.0.2.1", fromUri: "sip:dc1@10a0b0c1" })).toBeDefined();
  });

  it("normalises URIs", () => {
    expect(bareUri("<SIP:dc1@Host.Example:5061;transport=tls>")).toBe("sip:dc1@host.example");
  });
});
