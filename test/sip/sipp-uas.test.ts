/** sipp as a source agent (UAC) calling our UAS with NRDL INVITE/ACK/INFO/BYE, and as a softphone with SDP. */
import path from "node:path";
import type { SipJsBackend } from "../../lib/sip";
import { FIXTURES, answerEverything, listenerPort, runSipp, startAgent } from "./helpers";

const nrdlUac = path.join(FIXTURES, "sipp", "nrdl-uac.xml");
const sdpUac = path.join(FIXTURES, "sipp", "sdp-uac.xml");

describe("our UAS against a sipp UAC", () => {
  let uas: SipJsBackend;
  let seen: ReturnType<typeof answerEverything>;
  afterEach(() => uas.stop());

  it.each([
    ["u1", "udp"],
    ["t1", "tcp"],
  ] as const)("completes NRDL INVITE/ACK/INFO/BYE calls over %s", async (mode, kind) => {
    uas = await startAgent("dc2", ["udp", "tcp"]);
    seen = answerEverything(uas);
    const r = await runSipp([
      `127.0.0.1:${listenerPort(uas, kind)}`,
      "-sf",
      nrdlUac,
      "-s",
      "dc2",
      "-t",
      mode,
      "-i",
      "127.0.0.1",
      "-m",
      "10",
      "-r",
      "10",
      "-l",
      "10",
    ]);
    expect({ code: r.code, successful: r.successful, failed: r.failed }).toEqual({
      code: 0,
      successful: 10,
      failed: 0,
    });
    expect(seen).toEqual({ invites: 10, acks: 10, infos: 10, byes: 10, ended: 10 });
  });

  it("refuses an SDP INVITE with 415 and Accept: application/nrdl+xml, and keeps serving NRDL calls", async () => {
    uas = await startAgent("dc2", ["udp"]);
    seen = answerEverything(uas);
    const target = `127.0.0.1:${listenerPort(uas, "udp")}`;
    const [sdp, nrdl] = await Promise.all([
      runSipp([target, "-sf", sdpUac, "-s", "dc2", "-t", "u1", "-i", "127.0.0.1", "-m", "3", "-r", "10"]),
      runSipp([target, "-sf", nrdlUac, "-s", "dc2", "-t", "u1", "-i", "127.0.0.1", "-m", "3", "-r", "10"]),
    ]);
    expect([sdp.successful, sdp.failed, nrdl.successful, nrdl.failed]).toEqual([3, 0, 3, 0]);
    expect(seen.invites).toBe(3);
  });

  // 40 calls through 10 % random loss (sipp drops its own sends and receives): the UDP
  // retransmissions and the response cache make every call complete; without them some fail.
  it("completes every call at 10 % loss over UDP thanks to retransmissions", async () => {
    const run = async (unreliable: boolean): Promise<{ successful: number; failed: number }> => {
      uas = await startAgent("dc2", ["udp"], {}, { unreliable });
      answerEverything(uas);
      const r = await runSipp([
        `127.0.0.1:${listenerPort(uas, "udp")}`,
        "-sf",
        nrdlUac,
        "-s",
        "dc2",
        "-t",
        "u1",
        "-i",
        "127.0.0.1",
        "-m",
        "40",
        "-r",
        "20",
        "-lost",
        "10",
        "-recv_timeout",
        "8000",
        "-timeout",
        "40",
      ]);
      await uas.stop();
      return { successful: r.successful, failed: r.failed };
    };
    const reliable = await run(false);
    const bare = await run(true);
    console.log(
      `sipp -lost 10, 40 calls: with retransmissions ${reliable.successful} completed / ` +
        `${reliable.failed} failed; without ${bare.successful} / ${bare.failed}`,
    );
    expect(reliable).toEqual({ successful: 40, failed: 0 });
    expect(bare.failed).toBeGreaterThan(0);
    uas = await startAgent("dc2", ["udp"]); // for afterEach
  }, 60000);
});
