/**
 * #23 point 6: in-dialog requests to the source must come the way the destination's 200 OK did.
 * A forger who read the dialog's Call-ID and tags off the wire and sends BYE (it would end the
 * source's dialog, and the plan with it) or INFO from another address gets 403, and the dialog
 * goes on: the source's own BYE still reaches the destination and brings back its report. A
 * request from the destination's own address and transport is still taken.
 */
import type { SourceCall } from "../../agents/source/call";
import { bootOnSource, guestDefs, pairPerTest, runnableBackends, SEQUENTIAL, type Pair } from "../harness";
import { RawSipClient } from "./raw-sip";

jest.setTimeout(120_000);

const header = (text: string, name: string): string => {
  const line = text.split("\r\n").find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`));
  if (!line) throw new Error(`no ${name} in\n${text}`);
  return line.slice(line.indexOf(":") + 1).trim();
};

/** The dialog as the wire showed it, and a request the destination could send in it. */
function dialogOf(pair: Pair) {
  const invite = pair.dc1.trace.find((e) => e.direction === "sent" && e.message.startsWith("INVITE "));
  const ok = pair.dc1.trace.find(
    (e) =>
      e.direction === "received" && e.message.startsWith("SIP/2.0 200") && /\r\nCSeq:\s*\d+ INVITE/i.test(e.message),
  );
  if (!invite || !ok) throw new Error("no INVITE/200 in dc1's trace");
  const contact = /<([^>]+)>/.exec(header(invite.message, "Contact"))?.[1] ?? "";
  const callId = header(ok.message, "Call-ID");
  return {
    callId,
    request(method: string, cseq: number, from: RawSipClient, via: string): string {
      const info = method === "INFO" ? ["Info-Package: sip-teleport-status", "Content-Disposition: Info-Package"] : [];
      return [
        `${method} ${contact} SIP/2.0`,
        `Via: SIP/2.0/UDP ${via}:${from.localPort};branch=z9hG4bK${method}${cseq};rport`,
        "Max-Forwards: 70",
        `From: ${header(ok.message, "To")}`, // the destination's side, with its tag
        `To: ${header(ok.message, "From")}`,
        `Call-ID: ${callId}`,
        `CSeq: ${cseq} ${method}`,
        ...info,
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n");
    },
  };
}

describe.each(runnableBackends(["sipjs", "drachtio"] as const, "in-dialog requests to the source"))(
  "in-dialog requests to the source (%s)",
  (backend) => {
    const start = pairPerTest();
    let pair: Pair;
    let call: SourceCall;
    let dc1Port: number;

    beforeEach(async () => {
      pair = await start(await guestDefs([["router1", "router"]]), { transport: "udp", backend });
      await bootOnSource(pair);
      call = await pair.dc1.agent.call({ to: pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL });
      dc1Port = pair.dc1.sip.listeners[0].port;
    });

    it("refuses a forged BYE and INFO from another address with 403; the dialog survives", async () => {
      const dialog = dialogOf(pair);
      const forger = await RawSipClient.udp(dc1Port, "127.0.0.1", "127.0.0.2");
      try {
        forger.send(dialog.request("INFO", 900, forger, "127.0.0.2"));
        expect((await forger.final(dialog.callId, 3000, "900 INFO"))?.status).toBe(403);
        forger.send(dialog.request("BYE", 901, forger, "127.0.0.2"));
        const bye = await forger.final(dialog.callId, 3000, "901 BYE");
        expect(bye?.status).toBe(403);
        expect(bye?.header("warning")[0]).toMatch(
          /BYE from 127\.0\.0\.2 over UDP, but the dialog's 200 OK came from 127\.0\.0\.1 over UDP/,
        );
      } finally {
        forger.close();
      }
      // drachtio-server drops a dialog on any BYE before its app answers (README, Security): refused, yet over
      if (backend === "drachtio") return void expect((await call.bye()).destinationReport).toBeUndefined();
      // the dialog is intact: our BYE reaches the destination, whose report comes back in its 200
      const summary = await call.bye();
      expect(summary.destinationReport?.kind).toBe("report");
      expect(summary.vms).toEqual([expect.objectContaining({ vm: "router1", state: "aborted", host: "dc1" })]);
    });

    it("takes a BYE from the destination's own address and transport (it ends the dialog)", async () => {
      const dialog = dialogOf(pair);
      const peer = await RawSipClient.udp(dc1Port, "127.0.0.1", "127.0.0.1");
      try {
        peer.send(dialog.request("BYE", 902, peer, "127.0.0.1"));
        expect((await peer.final(dialog.callId, 3000, "902 BYE"))?.status).toBe(200);
      } finally {
        peer.close();
      }
      expect((await call.bye()).destinationReport).toBeUndefined(); // over already: no BYE of ours went out
    });
  },
);
