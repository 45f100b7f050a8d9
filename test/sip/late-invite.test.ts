/**
 * RFC 6026: a retransmitted INVITE that crosses our 200 OK, or arrives after its dialog already
 * ended, is absorbed, never taken for a new call (which would arm the VMs a second time).
 */
import { rawInvite } from "../security/raw-sip";
import { OFFER, withRawUas } from "./helpers";

test.each(["before ACK", "after BYE"])(
  "an INVITE retransmission arriving %s is absorbed: one dialog, acknowledged and ended",
  async (when) => {
    await withRawUas(async ({ raw, target, seen }) => {
      const inv = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, OFFER);
      raw.send(inv.text);
      const ok = await raw.final(inv.callId);
      expect(ok?.status).toBe(200);
      const toTag = /;tag=([^;>\s]+)/.exec(ok?.header("to")[0] ?? "")?.[1];
      const from = /^From: (.*)$/m.exec(inv.text)?.[1];
      const inDialog = (method: string, cseq: number) =>
        [
          `${method} ${target} SIP/2.0`,
          `Via: SIP/2.0/UDP 127.0.0.1:${raw.localPort};branch=z9hG4bK${method}${cseq}x;rport`,
          "Max-Forwards: 70",
          `From: ${from}`,
          `To: <${target}>;tag=${toTag}`,
          `Call-ID: ${inv.callId}`,
          `CSeq: ${cseq} ${method}`,
          "Content-Length: 0",
          "",
          "",
        ].join("\r\n");
      if (when === "before ACK") raw.send(inv.text); // crossed our 200 on the wire
      raw.send(inDialog("ACK", 1));
      raw.send(inDialog("BYE", 2));
      expect((await raw.final(inv.callId, 3000, "2 BYE"))?.status).toBe(200);
      if (when === "after BYE") raw.send(inv.text);
      await new Promise((r) => setTimeout(r, 300));
      expect(seen).toEqual({ invites: 1, acks: 1, infos: 0, byes: 1, ended: 1 });
    });
  },
);
