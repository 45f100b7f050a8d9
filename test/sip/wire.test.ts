/** Framing and Via handling of the transport layer, on text alone. */
import fc from "fast-check";
import { StreamFramer, parseVia, stampVia, trimDatagram } from "../../lib/sip/wire";
import { UdpReliability } from "../../lib/sip/udp-reliability";

const message = (body: string): string =>
  `INFO sip:dc2@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP ` +
  `10.0.0.1:5060;branch=z9hG4bK1;rport\r\nContent-Length: ` +
  `${Buffer.byteLength(body)}\r\n\r\n${body}`;

describe("StreamFramer", () => {
  it("frames by Content-Length in bytes whatever the chunking, skipping CRLF keep-alives", () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: "grapheme", maxLength: 40 }), { minLength: 1, maxLength: 5 }),
        fc.integer({ min: 1, max: 17 }),
        (bodies, chunk) => {
          const wire = Buffer.from(bodies.map((b) => `\r\n\r\n${message(b)}`).join(""));
          const framer = new StreamFramer();
          const out: string[] = [];
          for (let i = 0; i < wire.length; i += chunk) out.push(...framer.push(wire.subarray(i, i + chunk)));
          expect(out).toEqual(bodies.map(message));
        },
      ),
    );
  });

  it("refuses a stream that never ends a message", () => {
    const framer = new StreamFramer(64);
    expect(() => framer.push(Buffer.alloc(100, 65))).toThrow(/larger than 64 bytes/);
  });
});

describe("datagrams and Via", () => {
  it("cuts a datagram at Content-Length and drops one whose body is short", () => {
    expect(trimDatagram(Buffer.from(message("é") + "junk"))).toBe(message("é"));
    expect(trimDatagram(Buffer.from(message("éé").slice(0, -1)))).toBeUndefined();
  });

  it("stamps received and fills rport", () => {
    const stamped = stampVia(message(""), "192.0.2.7", 40000, false);
    expect(parseVia(stamped.split("\r\n")[1].slice(5))).toMatchObject({
      protocol: "TCP",
      host: "10.0.0.1",
      port: 5060,
      rport: "40000",
      received: "192.0.2.7",
      branch: "z9hG4bK1",
    });
  });
});

describe("UdpReliability", () => {
  const timers = { t1: 10, t2: 40 };

  it("retransmits a non-INVITE request with doubling intervals until the final response", async () => {
    const r = new UdpReliability(timers);
    const sent: number[] = [];
    const start = Date.now();
    r.requestSent("b1", "INFO", () => sent.push(Date.now() - start));
    await new Promise((res) => setTimeout(res, 125));
    r.responseReceived("b1", "INFO", 200);
    const count = sent.length;
    await new Promise((res) => setTimeout(res, 60));
    expect(sent.length).toBe(count);
    // 10, 30, 70, 110 ms (intervals 10, 20, 40, 40): four retransmissions, capped at T2
    expect(count).toBeGreaterThanOrEqual(3);
    expect(count).toBeLessThanOrEqual(4);
    r.stop();
  });

  it("replays a cached final response for a retransmitted request and absorbs the ACK of a non-2xx", () => {
    const r = new UdpReliability(timers);
    let replays = 0;
    r.responseSent("b2", "BYE", 200, () => replays++);
    expect(r.requestReceived("b2", "BYE")).toBe(true);
    expect(r.requestReceived("b3", "BYE")).toBe(false);
    r.responseSent("b4", "INVITE", 487, () => replays++);
    expect(r.requestReceived("b4", "ACK")).toBe(true);
    expect(replays).toBe(1);
    r.stop();
  });
});
