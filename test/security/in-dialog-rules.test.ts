/**
 * #23 point 7: every in-dialog request and every per-caller limit is held to what admitted the
 * INVITE. A dialog admitted by address takes BYE only from that address (not from any other the
 * allowlist admits); with `security.digestInDialog: false` a password-admitted dialog still takes
 * BYE only from the admitted peer (only the challenge is skipped); and `dialogsPerCaller` counts
 * the callers a trusted proxy relays one by one, by the identity it asserts. Raw UDP sockets play
 * the caller, a second allowlisted host, the proxy and the forger; router1 is armed for real.
 */
import { guestDefs, pairPerTest, placement, type Pair } from "../harness";
import {
  RawSipClient,
  digestAnswer,
  rawInDialog,
  rawInvite,
  type RawInvite,
  type RawResponse,
  rawOffer,
} from "./raw-sip";

jest.setTimeout(90_000);

const offer = rawOffer;

interface Opened {
  invite: RawInvite;
  ok: RawResponse | undefined;
}

/** BYE inside `dialog`, sent by `from`; resolves with its final answer. */
async function bye(from: RawSipClient, dialog: Opened, cseq: number): Promise<RawResponse | undefined> {
  from.send(rawInDialog(dialog.invite, dialog.ok, "BYE", cseq, { localPort: from.localPort }));
  return from.final(dialog.invite.callId, 3000, `${cseq} BYE`);
}

/** The caller's INVITE answered 200 and ACKed: router1 armed on dc2. */
async function open(caller: RawSipClient, target: string, from: string, extra: string[] = []): Promise<Opened> {
  const invite = rawInvite(target, from, caller.localPort, offer("router1", from), extra);
  caller.send(invite.text);
  const ok = await caller.final(invite.callId, 15000);
  expect(ok?.status).toBe(200);
  caller.send(rawInDialog(invite, ok, "ACK", 1, { localPort: caller.localPort }));
  return { invite, ok };
}

const targetOf = (pair: Pair) => `sip:dc2@127.0.0.1:${pair.dc2.sip.listeners[0].port}`;

describe("in-dialog requests and per-caller limits follow what admitted the INVITE", () => {
  const start = pairPerTest();

  it("admitted by address: a BYE from another allowlisted address is refused, the caller's own ends it", async () => {
    const pair = await start(await guestDefs([["router1", "router"]]), {
      dc2: { security: { allow: ["127.0.0.1", "127.0.0.3"] } },
    });
    const port = pair.dc2.sip.listeners[0].port;
    const caller = await RawSipClient.udp(port);
    const neighbour = await RawSipClient.udp(port, "127.0.0.1", "127.0.0.3"); // allowed to call, not this dialog
    try {
      const dialog = await open(caller, targetOf(pair), "sip:dc1@127.0.0.1");
      const forged = await bye(neighbour, dialog, 2);
      expect(forged?.status).toBe(403);
      expect(forged?.header("warning")[0]).toMatch(
        /BYE from 127\.0\.0\.3, but this dialog was admitted by the address 127\.0\.0\.1/,
      );
      expect(placement(pair).router1).toEqual(["dc2"]); // still armed
      expect((await bye(caller, dialog, 3))?.status).toBe(200);
      expect(placement(pair).router1).toEqual([]);
    } finally {
      caller.close();
      neighbour.close();
    }
  });

  it("digestInDialog false: a password-admitted dialog's BYE is still held to the admitted peer", async () => {
    const pair = await start(await guestDefs([["router1", "router"]]), {
      dc2: { security: { users: { dc1: "pw-dc1" }, allow: ["sip:dc1@*"], digestInDialog: false } },
    });
    const port = pair.dc2.sip.listeners[0].port;
    const target = targetOf(pair);
    const caller = await RawSipClient.udp(port);
    const forger = await RawSipClient.udp(port, "127.0.0.1", "127.0.0.3");
    try {
      const probe = rawInvite(target, "sip:dc1@127.0.0.1", caller.localPort, offer("router1", "sip:dc1@127.0.0.1"));
      caller.send(probe.text);
      const challenge = (await caller.final(probe.callId))?.header("www-authenticate").find((h) => /SHA-256/.test(h));
      if (!challenge) throw new Error("no SHA-256 challenge");
      const auth = `Authorization: ${digestAnswer(challenge, "dc1", "pw-dc1", "INVITE", target)}`;
      const dialog = await open(caller, target, "sip:dc1@127.0.0.1", [auth]);
      const forged = await bye(forger, dialog, 2); // no credentials: none are asked for in the dialog
      expect(forged?.status).toBe(403);
      expect(forged?.header("warning")[0]).toMatch(/BYE from 127\.0\.0\.3, .*digestInDialog is off/);
      expect(placement(pair).router1).toEqual(["dc2"]);
      expect((await bye(caller, dialog, 3))?.status).toBe(200); // the peer itself, unchallenged
      expect(placement(pair).router1).toEqual([]);
    } finally {
      caller.close();
      forger.close();
    }
  });

  it("dialogsPerCaller behind a trusted proxy counts each asserted caller, not the proxy's address", async () => {
    const PROXY = "127.0.0.2";
    const pair = await start(
      await guestDefs([
        ["router1", "router"],
        ["video", "server"],
      ]),
      {
        dc2: {
          security: { allow: ["sip:*@ops.example"] },
          limits: { trustedProxies: [PROXY], dialogsPerCaller: 1 },
        },
      },
    );
    const port = pair.dc2.sip.listeners[0].port;
    const target = targetOf(pair);
    const proxy = await RawSipClient.udp(port, "127.0.0.1", PROXY);
    const relayed = (who: string, vm: string) =>
      rawInvite(target, who, proxy.localPort, offer(vm, who), [
        `P-Asserted-Identity: <${who}>`,
        `Record-Route: <sip:${PROXY}:${proxy.localPort};lr>`,
      ]);
    try {
      const first = relayed("sip:alice@ops.example", "router1");
      proxy.send(first.text);
      expect((await proxy.final(first.callId, 15000))?.status).toBe(200);
      // alice again, with another From: the assertion is who she is, so her limit is reached
      const again = rawInvite(
        target,
        "sip:someone-else@ops.example",
        proxy.localPort,
        offer("video", "sip:someone-else@ops.example"),
        ["P-Asserted-Identity: <sip:alice@ops.example>", `Record-Route: <sip:${PROXY}:${proxy.localPort};lr>`],
      );
      proxy.send(again.text);
      const limited = await proxy.final(again.callId, 15000);
      expect(limited?.status).toBe(503);
      expect(limited?.header("warning")[0]).toMatch(/sip:alice@ops\.example \(proxy\) already holds 1 open dialogs/);
      // bob, relayed by the same proxy, is another caller
      const other = relayed("sip:bob@ops.example", "video");
      proxy.send(other.text);
      expect((await proxy.final(other.callId, 15000))?.status).toBe(200);
      expect(placement(pair)).toEqual({ router1: ["dc2"], video: ["dc2"] });
    } finally {
      proxy.close();
    }
  });
});
