/**
 * The requests of a dialog we answer on drachtio that reach us before srf has made that dialog
 * (lib/sip/drachtio/srf.ts): they wait for it and go to our handler once it is ours, never to
 * srf's own answers; a BYE or INFO of no dialog of ours is ours to refuse.
 */
import {
  expectDialog,
  forgetExpected,
  ownDialog,
  strayInDialog,
  type SrfDialog,
  type SrfIncomingRequest,
  type SrfResponse,
} from "../../lib/sip/drachtio/srf";

function message(method: string, callId: string, tag: string, dialogId = ""): SrfIncomingRequest {
  const headers: Record<string, string> = { "call-id": callId };
  return {
    method,
    stackDialogId: dialogId,
    get: (name: string) => headers[name.toLowerCase()],
    has: (name: string) => name.toLowerCase() in headers,
    getParsedHeader: () => ({ uri: "sip:dc1@127.0.0.1", params: { tag } }),
  } as unknown as SrfIncomingRequest;
}

const res = {} as SrfResponse;
const inDialog = (method: string, callId = "c1", tag = "t1") =>
  message(method, callId, tag, `${callId};from-tag=${tag}`);
const turn = () => new Promise((r) => setImmediate(r));

describe("in-dialog requests srf has no dialog for yet", () => {
  test("an ACK and a BYE told before our 200 was confirmed wait, then reach our handler in order", async () => {
    const invite = message("INVITE", "c1", "t1");
    expectDialog(invite);
    const next = jest.fn();
    const refuse = jest.fn();
    const ack = inDialog("ACK");
    const bye = inDialog("BYE");
    strayInDialog(ack, res, next, refuse);
    strayInDialog(bye, res, next, refuse);
    expect([next.mock.calls.length, refuse.mock.calls.length]).toEqual([0, 0]);
    const seen: SrfIncomingRequest[] = [];
    ownDialog({ req: invite, sip: { callId: "c1" } } as unknown as SrfDialog, (r) => seen.push(r));
    expect(seen).toEqual([]); // on the next turn: the agent attaches its handlers a promise later
    await turn();
    expect(seen).toEqual([ack, bye]);
  });

  test("another dialog's requests do not wait: a BYE or INFO is refused, an ACK and the rest go on", () => {
    const invite = message("INVITE", "c2", "t2");
    expectDialog(invite);
    const next = jest.fn();
    const refuse = jest.fn();
    strayInDialog(inDialog("BYE", "c2", "theirs"), res, next, refuse); // same Call-ID, the other side's tag
    strayInDialog(inDialog("INFO", "c3", "t2"), res, next, refuse);
    strayInDialog(inDialog("ACK", "c3", "t2"), res, next, refuse);
    strayInDialog(message("BYE", "c2", "t2"), res, next, refuse); // not in a dialog: srf's business
    strayInDialog(inDialog("UPDATE", "c2", "t2"), res, next, refuse);
    expect([refuse.mock.calls.length, next.mock.calls.length]).toEqual([2, 3]);
    expect(forgetExpected(invite)).toEqual([]);
  });

  test("no dialog after all: what waited is handed back to be refused", () => {
    const invite = message("INVITE", "c4", "t4");
    expectDialog(invite);
    const bye = inDialog("BYE", "c4", "t4");
    strayInDialog(bye, res, jest.fn(), jest.fn());
    expect(forgetExpected(invite)).toEqual([[bye, res]]);
    const refuse = jest.fn();
    strayInDialog(inDialog("BYE", "c4", "t4"), res, jest.fn(), refuse);
    expect(refuse).toHaveBeenCalledTimes(1);
  });
});
