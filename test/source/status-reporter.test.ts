/**
 * The source's in-dialog INFOs: one in flight at a time (RFC 6086), and during a group's
 * switchover no status INFO at all, so that the group's own <switchover> never waits behind one
 * (the destination claims the group's frames on it, and each millisecond of waiting loses some).
 */
import type { Dialog, ResponseInfo, SipBody } from "../../lib/sip/backend";
import { silentLogger } from "../../lib/log/logger";
import { StatusReporter } from "../../agents/source/status-reporter";

/** A dialog that records INFO bodies and answers each only when the test says so. */
function recordingDialog() {
  const sent: string[] = [];
  const answers: Array<() => void> = [];
  const ok: ResponseInfo = { status: 200, reason: "OK", header: () => undefined };
  const dialog = {
    id: "d",
    callId: "c",
    remoteUri: "sip:dc2@127.0.0.1",
    info(body: SipBody) {
      sent.push(body.content);
      return new Promise<ResponseInfo>((resolve) => answers.push(() => resolve(ok)));
    },
  } as unknown as Dialog;
  const answerNext = async () => {
    answers.shift()?.();
    await new Promise((r) => setImmediate(r));
  };
  return { dialog, sent, answerNext };
}

const kinds = (sent: string[]) => sent.map((c) => (c.includes("<status") ? "status" : "request"));

describe("StatusReporter", () => {
  it("sends one INFO at a time and a request before the next status", async () => {
    const { dialog, sent, answerNext } = recordingDialog();
    const r = new StatusReporter(dialog, "mig-1", 2, silentLogger);
    r.state({ vm: "a", state: "migrating", progress: 0 });
    r.state({ vm: "b", state: "migrating", progress: 0 });
    expect(kinds(sent)).toEqual(["status"]); // b waits for a's answer
    const req = r.request("<nrdl>request</nrdl>");
    await answerNext();
    expect(kinds(sent)).toEqual(["status", "request"]);
    await answerNext();
    await req;
    expect(kinds(sent)).toEqual(["status", "request", "status"]);
    await answerNext();
    await r.close(100);
  });

  it("holds statuses during a switchover: the group's request goes at once, statuses after the release", async () => {
    const { dialog, sent, answerNext } = recordingDialog();
    const r = new StatusReporter(dialog, "mig-1", 2, silentLogger);
    r.holdStatuses();
    r.state({ vm: "a", state: "migrating", progress: 0.5 });
    expect(sent).toEqual([]);
    const req = r.request("<nrdl>switchover</nrdl>");
    expect(kinds(sent)).toEqual(["request"]);
    await answerNext();
    await req;
    expect(kinds(sent)).toEqual(["request"]); // still held
    r.releaseStatuses();
    expect(kinds(sent)).toEqual(["request", "status"]);
    await answerNext();
    await r.close(100);
  });

  it("lets the statuses go when a hold is never released", async () => {
    const { dialog, sent, answerNext } = recordingDialog();
    const r = new StatusReporter(dialog, "mig-1", 2, silentLogger);
    r.holdStatuses(30);
    r.state({ vm: "a", state: "migrating", progress: 0.5 });
    expect(sent).toEqual([]);
    await new Promise((res) => setTimeout(res, 60));
    expect(kinds(sent)).toEqual(["status"]);
    await answerNext();
    await r.close(100);
  });
});
