/**
 * #23 point 4: a refusal sent before any transaction is kept goes out once (RFC 3261 8.2, 17.2.1),
 * so a spoofed source cannot turn the destination into a reflector, and the UDP retransmission
 * timers are capped. A short T1 (20 ms: Timer G would resend at 20, 40, 80 ... ms and give up at
 * 64 x T1 = 1.28 s) lets the test wait out every copy the old code sent. Raw UDP sockets play the
 * stranger (127.0.0.2, outside the allowlist) and an allowed caller that never ACKs.
 */
import { guestDefs, pairPerTest, type Pair } from "../harness";
import { RawSipClient, rawInvite, type RawInvite, rawOffer } from "./raw-sip";

jest.setTimeout(60_000);

const offerOf = rawOffer;

/** The destination's live UDP retransmission timers (the sip.js backend's count). */
const timersOf = (pair: Pair): number | undefined =>
  (pair.dc2.sip as Partial<{ retransmissionTimers: number }>).retransmissionTimers;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("stateless refusals are sent once", () => {
  const start = pairPerTest();

  it("N INVITEs from a stranger get exactly N responses (403 or the rate limit's 503), and hold no timer", async () => {
    const t1 = 20;
    const pair = await start(await guestDefs([["router1", "router"]]), {
      backend: "sipjs", // drachtio-server keeps its own transactions for every answer
      dc2: { sip: { timerT1Ms: t1 }, security: { allow: ["127.0.0.1"] }, limits: { invitesPerSecond: 5 } },
    });
    const port = pair.dc2.sip.listeners[0].port;
    const stranger = await RawSipClient.udp(port, "127.0.0.1", "127.0.0.2");
    try {
      const n = 40;
      const sent: RawInvite[] = [];
      let maxTimers = 0;
      for (let i = 0; i < n; i++) {
        const invite = rawInvite(
          `sip:dc2@127.0.0.1:${port}`,
          "sip:dc1@127.0.0.1",
          stranger.localPort,
          offerOf("video"),
        );
        sent.push(invite);
        stranger.send(invite.text); // and never an ACK: the old code's Timer G resent each answer
        if (i % 10 === 9) await sleep(5);
        maxTimers = Math.max(maxTimers, timersOf(pair) ?? Infinity);
      }
      // every copy Timer G would have sent lies within 64 x T1; wait well past it
      const until = Date.now() + 64 * t1 + 1500;
      while (Date.now() < until) {
        maxTimers = Math.max(maxTimers, timersOf(pair) ?? Infinity);
        await sleep(50);
      }
      const perCall = sent.map((s) => stranger.all(s.callId));
      const statuses = new Set(perCall.flat().map((r) => r.status));
      expect(perCall.map((r) => r.length)).toEqual(sent.map(() => 1));
      expect(perCall.flat()).toHaveLength(n);
      expect([...statuses].sort()).toEqual([403, 503]);
      expect(maxTimers).toBe(0);
    } finally {
      stranger.close();
    }
  });

  it("the retransmission timers are capped: beyond limits.maxRetransmissionTimers new INVITEs get 503", async () => {
    const cap = 4;
    const pair = await start(await guestDefs([["router1", "router"]]), {
      backend: "sipjs",
      dc2: { limits: { invitesPerSecond: 1000, maxRetransmissionTimers: cap } },
    });
    const port = pair.dc2.sip.listeners[0].port;
    const caller = await RawSipClient.udp(port); // 127.0.0.1: allowed, so its 488s are kept for their ACK
    try {
      const sent = Array.from({ length: 12 }, () =>
        rawInvite(`sip:dc2@127.0.0.1:${port}`, "sip:dc1@127.0.0.1", caller.localPort, offerOf("ghost")),
      );
      let maxTimers = 0;
      for (const s of sent) {
        caller.send(s.text);
        const answer = await caller.final(s.callId, 3000);
        expect(answer).toBeDefined();
        maxTimers = Math.max(maxTimers, timersOf(pair) ?? Infinity);
      }
      const finals = await Promise.all(sent.map((s) => caller.final(s.callId)));
      const statuses = finals.map((f) => f?.status);
      expect(statuses.slice(0, cap)).toEqual(Array(cap).fill(488)); // an unknown VM, judged in its transaction
      expect(statuses.slice(cap)).toEqual(Array(sent.length - cap).fill(503));
      expect(finals[cap]?.header("warning")[0]).toMatch(/UDP retransmissions pending/);
      expect(Number(finals[cap]?.header("retry-after")[0])).toBeGreaterThanOrEqual(1);
      expect(maxTimers).toBeLessThanOrEqual(cap);
      // the refused ones were sent once: no 100 Trying, no copy
      for (const s of sent.slice(cap)) expect(caller.all(s.callId)).toHaveLength(1);
    } finally {
      caller.close();
    }
  });
});
