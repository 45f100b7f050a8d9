/**
 * Hostile input against a destination agent while a real migration runs through it: a corpus
 * of known attacks with the exact answer each must get (400 Too Many Headers, 513 Message Too
 * Large, 400 Bad Request, silence for garbage), then a few hundred fast-check mutations of a
 * valid NRDL INVITE and random bytes over UDP and TCP. The agent must answer no mutation with
 * 2xx or 500, keep serving, and the migration must complete. Then the per-caller limits.
 */
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { NRDL_MIME } from "../../nrdl/types";
import { bootOnSource, expectAllOn, guestDefs, placement, refusal, SEQUENTIAL, pairPerTest } from "../harness";
import { RawSipClient, rawInvite, type RawInvite, rawOffer } from "./raw-sip";

const SEED = Number(process.env.FUZZ_SEED ?? 20261125);
const RUNS = 300;

const offerOf = rawOffer;

/** Insert `lines` right after the request line (they come before the headers a response needs). */
const withLines = (inv: RawInvite, lines: string[], after = 0): string => {
  const all = inv.text.split("\r\n");
  all.splice(after + 1, 0, ...lines);
  return all.join("\r\n");
};

const setLength = (text: string, n: number) => text.replace(/^Content-Length: \d+/m, `Content-Length: ${n}`);

type Mutation = (inv: RawInvite) => string | Buffer;

/** Mutations of a valid INVITE (for a VM dc2 does not define: anything still valid gets 488). */
const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.nat().map(
    (n): Mutation =>
      (inv) =>
        inv.text.slice(0, n % inv.text.length),
  ),
  fc.integer({ min: 0, max: 1 << 20 }).map(
    (n): Mutation =>
      (inv) =>
        setLength(inv.text, n),
  ),
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 400 })).map(([i, k]): Mutation => (inv) => {
    const lines = inv.text.split("\r\n");
    return withLines(inv, Array(k).fill(lines[1 + (i % 8)]), i % 8);
  }),
  fc.nat().map((i): Mutation => (inv) => {
    const lines = inv.text.split("\r\n");
    lines.splice(1 + (i % 9), 1);
    return lines.join("\r\n");
  }),
  fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 64 })).map(([at, bytes]): Mutation => (inv) => {
    const buf = Buffer.from(inv.text);
    const p = at % buf.length;
    return Buffer.concat([buf.subarray(0, p), Buffer.from(bytes), buf.subarray(p)]);
  }),
  fc.integer({ min: 1000, max: 40000 }).map(
    (n): Mutation =>
      (inv) =>
        withLines(inv, [`X-Big: ${"a".repeat(n)}`], 3),
  ),
  // NRDL mutations with a correct Content-Length: the agent's validator answers them
  fc.tuple(fc.nat(), fc.nat(), fc.string({ maxLength: 40 })).map(([a, b, junk]): Mutation => (inv) => {
    const cut = inv.text.indexOf("\r\n\r\n") + 4;
    const body = inv.text.slice(cut);
    const [from, to] = [a % body.length, b % body.length].sort((x, y) => x - y);
    const mutated = body.slice(0, from) + junk + body.slice(to);
    return setLength(inv.text.slice(0, cut), Buffer.byteLength(mutated)) + mutated;
  }),
  fc.uint8Array({ minLength: 0, maxLength: 3000 }).map(
    (bytes): Mutation =>
      () =>
        Buffer.from(bytes),
  ),
);

describe("hostile input", () => {
  const start = pairPerTest();

  it("answers the attack corpus and a few hundred mutations correctly while a real migration succeeds", async () => {
    const pair = await start(await guestDefs([["router1", "router"]]), {
      dc2: {
        sip: {
          listen: [
            { transport: "udp", address: "127.0.0.1", port: 0 },
            { transport: "tcp", address: "127.0.0.1", port: 0 },
          ],
        },
        limits: { maxMessageBytes: 32768, invitesPerSecond: 100000 },
      },
    });
    await bootOnSource(pair);
    const [udpPort, tcpPort] = pair.dc2.sip.listeners.map((l) => l.port);
    const target = `sip:dc2@127.0.0.1:${udpPort}`;
    const udp = await RawSipClient.udp(udpPort);
    const tcp = await RawSipClient.tcp(tcpPort);
    // capped so the migration (~74 MiB) is still running while the mutations fly
    let migratedAt = 0;
    const migration = pair.dc1.agent
      .migrate({ to: pair.dc2.uri, vms: ["router1"], policy: { ...SEQUENTIAL, bandwidthMbps: 200 } })
      .finally(() => (migratedAt = Date.now()));
    let fuzzStartedAt = 0;
    try {
      const ghost = () => rawInvite(target, "sip:dc1@127.0.0.1", udp.localPort, offerOf("ghost"));
      // fast-check: mutations over UDP (and TCP for those too big for a datagram), all sent, then judged
      const cases = fc.sample(mutation, { numRuns: RUNS, seed: SEED });
      fuzzStartedAt = Date.now();
      const sent: Array<{ callId: string; size: number }> = [];
      const tcp2 = await RawSipClient.tcp(tcpPort);
      for (const m of cases) {
        const base = ghost();
        const text = m(base);
        if (text.length < 60000) udp.send(text);
        else tcp2.send(text);
        sent.push({ callId: base.callId, size: text.length });
        await new Promise((r) => setTimeout(r, 5));
      }
      await new Promise((r) => setTimeout(r, 1500));
      const answers = await Promise.all(sent.map((s) => udp.final(s.callId, 0)));
      const statuses = answers.map((a) => a?.status);
      const bad = statuses.map((st, i) => ({ st, i })).filter(({ st }) => st !== undefined && (st < 300 || st === 500));
      for (const { i } of bad) console.log(`case ${i}:`, JSON.stringify(answers[i]?.text.slice(0, 400)));
      expect(bad).toEqual([]);
      const count = (pred: (s: number | undefined) => boolean) => statuses.filter(pred).length;
      console.log(
        `fuzz seed ${SEED}: ${RUNS} mutations, answered ${count((s) => s !== undefined)} ` +
          `(400: ${count((s) => s === 400)}, 488: ${count((s) => s === 488)}, 513: ` +
          `${count((s) => s === 513)}, other: ` +
          `${count((s) => s !== undefined && ![400, 488, 513].includes(s))}), silent ` +
          `${count((s) => s === undefined)}`,
      );
      tcp2.close();

      // the corpus: each attack and the answer it must get
      const expectAnswer = async (
        client: RawSipClient,
        inv: RawInvite,
        text: string | Buffer,
        status: number | undefined,
        warning?: RegExp,
      ) => {
        client.send(text);
        const r = await client.final(inv.callId, status === undefined ? 500 : 3000);
        expect([text.length, r?.status]).toEqual([text.length, status]);
        if (warning) expect(r?.text.split("\r\n")[0]).toMatch(warning);
      };
      let inv = ghost();
      await expectAnswer(
        udp,
        inv,
        withLines(inv, Array(400).fill(inv.text.split("\r\n")[1]), 6),
        400,
        /Too Many Headers/,
      );
      inv = ghost();
      await expectAnswer(
        udp,
        inv,
        withLines(
          inv,
          Array.from({ length: 2000 }, (_x, i) => `X-H${i}: a`),
          6,
        ),
        400,
        /Too Many Headers/,
      );
      inv = ghost();
      await expectAnswer(udp, inv, setLength(inv.text, 5000), 400, /Bad Request/);
      inv = ghost();
      const truncated = inv.text.slice(0, inv.text.indexOf("\r\n\r\n")); // no header end
      await expectAnswer(udp, inv, truncated, 400, /Bad Request/);
      inv = ghost();
      await expectAnswer(udp, inv, withLines(inv, [`X-Big: ${"a".repeat(40000)}`], 6), 513, /Message Too Large/);
      inv = ghost();
      await expectAnswer(udp, inv, randomBytes(1200), undefined); // garbage: nothing to answer
      inv = rawInvite(target, "sip:dc1@127.0.0.1", tcp.localPort, offerOf("ghost"), [], "TCP");
      await expectAnswer(
        tcp,
        inv,
        withLines(inv, Array(10000).fill(`Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK${"x".repeat(30)}`), 6),
        513,
        /Message Too Large/,
      );
      tcp.close();
    } finally {
      udp.close();
    }
    const summary = await migration;
    expect(summary.outcome).toBe("completed");
    expect(migratedAt).toBeGreaterThan(fuzzStartedAt); // it was still running when the mutations began
    await expectAllOn(pair, "dc2");
    expect((await pair.dc1.sip.options(pair.dc2.uri)).status).toBe(200); // still serving
  });

  it("limits per caller: INVITE rate per address (503 + Retry-After) and open dialogs per caller", async () => {
    const pair = await start(
      await guestDefs([
        ["router1", "router"],
        ["video", "server"],
      ]),
      { dc2: { limits: { invitesPerSecond: 5, dialogsPerCaller: 1 } } },
    );
    const offer = (vm: string) => ({ contentType: NRDL_MIME, content: offerOf(vm) });
    const { dialog } = await pair.dc1.sip.invite(pair.dc2.uri, offer("router1")).established;
    const second = await refusal(pair.dc1.sip.invite(pair.dc2.uri, offer("video")).established);
    expect(second.status).toBe(503);
    expect(second.message).toMatch(/127\.0\.0\.1 already holds 1 open dialogs \(limit 1\)/);
    expect(placement(pair)).toEqual({ router1: ["dc2"], video: [] });
    await dialog.bye();

    const port = pair.dc2.sip.listeners[0].port;
    const raw = await RawSipClient.udp(port);
    try {
      const burst = Array.from({ length: 15 }, () =>
        rawInvite(`sip:dc2@127.0.0.1:${port}`, "sip:dc1@127.0.0.1", raw.localPort, offerOf("ghost")),
      );
      burst.forEach((b) => raw.send(b.text));
      const answers = await Promise.all(burst.map((b) => raw.final(b.callId)));
      const limited = answers.filter((a) => a?.status === 503);
      expect(limited.length).toBeGreaterThanOrEqual(15 - 5 - 2); // 5 per second: a few get through, the rest wait
      expect(Number(limited[0]?.header("retry-after")[0])).toBeGreaterThanOrEqual(1);
      expect(limited[0]?.header("warning")[0]).toMatch(/more than 5 INVITEs per second from 127\.0\.0\.1/);
    } finally {
      raw.close();
    }
  });

  it(
    "behind a trusted proxy INVITEs are counted per caller: " + "one flooding caller does not lock out the others",
    async () => {
      const pair = await start(await guestDefs([["router1", "router"]]), {
        dc2: { limits: { invitesPerSecond: 5, trustedProxies: ["127.0.0.1"] } },
      });
      const port = pair.dc2.sip.listeners[0].port;
      const raw = await RawSipClient.udp(port);
      try {
        const invite = (from: string) => rawInvite(`sip:dc2@127.0.0.1:${port}`, from, raw.localPort, offerOf("ghost"));
        const flood = Array.from({ length: 15 }, () => invite("sip:mallory@127.0.0.1"));
        flood.forEach((b) => raw.send(b.text));
        const honest = invite("sip:dc1@127.0.0.1");
        raw.send(honest.text);
        const limited = (await Promise.all(flood.map((b) => raw.final(b.callId)))).filter((a) => a?.status === 503);
        expect(limited.length).toBeGreaterThanOrEqual(15 - 5 - 2);
        expect(limited[0]?.header("warning")[0]).toMatch(
          /INVITEs per second from sip:mallory@127\.0\.0\.1 via 127\.0\.0\.1/,
        );
        // the other caller of the same proxy address is judged on its offer (an unknown VM), not throttled
        expect((await raw.final(honest.callId))?.status).toBe(488);
      } finally {
        raw.close();
      }
    },
  );
});
