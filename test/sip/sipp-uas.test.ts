/** sipp as a source agent (UAC) calling our UAS with NRDL INVITE/ACK/INFO/BYE. */
import path from "node:path";
import type { SipJsBackend } from "../../lib/sip";
import { FIXTURES, answerEverything, listenerPort, runSipp, startAgent } from "./helpers";

const scenario = path.join(FIXTURES, "sipp", "nrdl-uac.xml");

describe("our UAS against a sipp UAC", () => {
  let uas: SipJsBackend;
  let seen: ReturnType<typeof answerEverything>;
  beforeEach(async () => {
    uas = await startAgent("dc2", ["udp", "tcp"]);
    seen = answerEverything(uas);
  });
  afterEach(() => uas.stop());

  it.each([
    ["u1", "udp"],
    ["t1", "tcp"],
  ] as const)("completes NRDL calls over %s", async (mode, kind) => {
    const r = await runSipp([`127.0.0.1:${listenerPort(uas, kind)}`, "-sf", scenario, "-s", "dc2", "-t", mode, "-i", "127.0.0.1", "-m", "10", "-r", "10", "-l", "10"]);
    expect({ code: r.code, successful: r.successful, failed: r.failed }).toEqual({ code: 0, successful: 10, failed: 0 });
    expect(seen).toEqual({ invites: 10, acks: 10, infos: 10, byes: 10 });
  });
});
