/**
 * #23 point 6, the rule behind test/security/source-in-dialog.test.ts: which transport, address,
 * connection and certificate an in-dialog request to the source must have, given its 200 OK.
 */
import { answerProof, sourceInDialogRefusal } from "../../lib/access/source-in-dialog";
import type { IncomingRequest, Peer, ResponseInfo } from "../../lib/sip/backend";

describe("the rule, request by request", () => {
  const cert = { subject: "CN=dc2", sipUris: ["sip:dc2@dc2.example"] };
  const ok = (source: Peer, headers: Record<string, string> = {}): ResponseInfo => ({
    status: 200,
    reason: "OK",
    header: (n) => headers[n],
    source,
  });
  const req = (source: Peer): IncomingRequest => ({
    method: "BYE",
    ruri: "sip:dc1@10.0.0.1",
    callId: "c",
    fromUri: "sip:dc2@10.0.0.2",
    toUri: "sip:dc1@10.0.0.1",
    header: () => undefined,
    source,
  });
  const tls = (address: string, port: number, certificate?: typeof cert): Peer => ({
    address,
    port,
    transport: "tls",
    certificate,
  });

  it("over TLS: the 200's connection, or another that shows no certificate or the 200's; never another's", () => {
    const proof = answerProof(ok(tls("10.0.0.2", 5061, cert)));
    expect(sourceInDialogRefusal(req(tls("10.0.0.2", 5061)), proof)).toBeUndefined();
    expect(sourceInDialogRefusal(req(tls("10.0.0.2", 40000, cert)), proof)).toBeUndefined();
    expect(sourceInDialogRefusal(req(tls("10.0.0.2", 40000)), proof)).toBeUndefined();
    const other = { subject: "CN=mallory", sipUris: ["sip:mallory@dc2.example"] };
    expect(sourceInDialogRefusal(req(tls("10.0.0.2", 40000, other)), proof)).toMatch(
      /with a certificate \(CN=mallory\) other than the 200 OK's \(CN=dc2\)/,
    );
    expect(sourceInDialogRefusal(req({ address: "10.0.0.2", port: 5061, transport: "tcp" }), proof)).toMatch(
      /over TCP, but the dialog's 200 OK came from 10\.0\.0\.2 over TLS/,
    );
  });

  it("a record-routed 200: only the proxy; without a route set its Contact too", () => {
    const proxy: Peer = { address: "192.0.2.10", port: 5060, transport: "udp" };
    const direct: Peer = { address: "10.0.0.2", port: 5060, transport: "udp" };
    const contact = { Contact: "<sip:dc2@10.0.0.2:5060>" };
    const routed = answerProof(ok(proxy, { ...contact, "Record-Route": "<sip:192.0.2.10;lr>" }));
    expect(sourceInDialogRefusal(req(proxy), routed)).toBeUndefined();
    expect(sourceInDialogRefusal(req(direct), routed)).toMatch(/BYE from 10\.0\.0\.2 over UDP, but/);
    const unrouted = answerProof(ok(proxy, contact));
    expect(sourceInDialogRefusal(req(direct), unrouted)).toBeUndefined();
    expect(sourceInDialogRefusal(req({ ...direct, address: "10.0.0.3" }), unrouted)).toMatch(/10\.0\.0\.3/);
    expect(sourceInDialogRefusal(req(direct), undefined)).toMatch(/network source is unknown/);
  });
});
