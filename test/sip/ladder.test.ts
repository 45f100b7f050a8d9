import { describeMessage, ladderSteps, renderLadder } from "../../lib/sip/ladder";

const invite =
  "INVITE sip:dc2@127.0.0.1 SIP/2.0\r\nCall-ID: abc\r\nCSeq: 1 INVITE\r\nContent-Type: " +
  'application/nrdl+xml\r\n\r\n<nrdl><offer><vm name="r1"/></offer></nrdl>';
const ok = 'SIP/2.0 200 OK\r\nCall-ID: abc\r\nCSeq: 1 INVITE\r\n\r\n<nrdl><answer><armed vm="r1"/></answer></nrdl>';
const info =
  'INFO sip:dc2 SIP/2.0\r\ni: abc\r\nCSeq: 2 INFO\r\n\r\n<nrdl><status vm="r1" ' +
  'state="migrating" progress="0.42"/></nrdl>';
const other = "BYE sip:x SIP/2.0\r\nCall-ID: zzz\r\nCSeq: 3 BYE\r\n\r\n";

describe("SIP ladder", () => {
  it("labels requests and responses with the NRDL body they carry", () => {
    expect(describeMessage(invite)).toEqual({ label: "INVITE [offer]", callId: "abc" });
    expect(describeMessage(ok).label).toBe("200 OK (INVITE) [answer]");
    expect(describeMessage(info)).toEqual({ label: "INFO [status: r1 migrating 42%]", callId: "abc" });
  });

  it("draws one arrow per message of the dialog, in direction", () => {
    const steps = ladderSteps(
      [
        { direction: "sent", message: invite, at: 1000 },
        { direction: "received", message: ok, at: 1250 },
        { direction: "sent", message: other, at: 1300 },
      ],
      "abc",
    );
    const text = renderLadder(steps, "dc1", "dc2");
    const lines = text.trimEnd().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[1]).toMatch(/^\s+0\.000s \|-+ INVITE \[offer\] -+>\|$/);
    expect(lines[2]).toMatch(/^\s+0\.250s \|<-+ 200 OK \(INVITE\) \[answer\] -+\|$/);
    expect(lines[1].length).toBe(lines[2].length);
  });
});
