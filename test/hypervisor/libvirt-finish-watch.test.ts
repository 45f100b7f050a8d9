/**
 * The source's view of its control connection (libvirt-finish-watch.ts): the move is done at the
 * destination's successful Finish3 answer, with the figures from the Finish3 call's cookie, in
 * whatever chunks the bytes come; an error answer, or another procedure's, is not the end.
 */
import { FinishWatch } from "../../lib/hypervisor/libvirt-finish-watch";
import { FINISH3_PARAMS, REMOTE_PROGRAM } from "../../lib/hypervisor/libvirt-rpc-gate";

/** One RPC message: length, program, version, procedure, type, serial, status, payload. */
function message(proc: number, type: number, status: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(28);
  [28 + payload.length, REMOTE_PROGRAM, 1, proc, type, 7, status].forEach((v, i) => head.writeUInt32BE(v, i * 4));
  return Buffer.concat([head, payload]);
}

/** A *_PARAMS payload with no parameters and `cookie` (XDR opaque, padded). */
function withCookie(cookie: string): Buffer {
  const bytes = Buffer.from(cookie);
  const words = Buffer.alloc(8);
  words.writeUInt32BE(0, 0);
  words.writeUInt32BE(bytes.length, 4);
  return Buffer.concat([words, bytes, Buffer.alloc((4 - (bytes.length % 4)) % 4)]);
}

const cookie =
  "<qemu-migration><name>web1</name><statistics><started>1</started><stopped>1796623848932</stopped>" +
  "<time_elapsed>1283</time_elapsed><downtime>106</downtime><memory_processed>53000000</memory_processed>" +
  "</statistics></qemu-migration>\0";

describe("FinishWatch", () => {
  it("settles at the successful Finish3 answer with the call's statistics, the bytes in any chunks", async () => {
    const watch = new FinishWatch();
    let settled = false;
    void watch.finished.then(() => (settled = true));
    const call = message(FINISH3_PARAMS, 0, 0, withCookie(cookie));
    for (let i = 0; i < call.length; i += 5) watch.sent(call.subarray(i, i + 5));
    watch.answered(message(60, 1, 0)); // another procedure's answer
    watch.answered(message(FINISH3_PARAMS, 1, 1)); // Finish3 failed
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    const ok = message(FINISH3_PARAMS, 1, 0, Buffer.alloc(12));
    watch.answered(ok.subarray(0, 10));
    watch.answered(ok.subarray(10));
    await expect(watch.finished).resolves.toEqual({
      timeElapsedMs: 1283,
      downtimeMs: 106,
      stoppedAt: 1796623848932,
      memoryBytes: 53000000,
      diskBytes: undefined,
    });
  });
});
