/**
 * The framing of one VM's stream between the dedup relays (nrdl/SPEC.md 5.8), source to
 * destination: type (u8), then per type: OPEN a u32 length and the VM's name; DATA a u32 length
 * and bytes; STORE a page the destination keeps; PAGE a page it does not (index full); REF the
 * SHA-256 of a page it keeps; END the stream ended (a connection closed without it failed).
 */
import { TeleportError } from "../errors";
import { PAGE_SIZE } from "./ram-stream";

export const DIGEST_BYTES = 32;
export const FRAME = { open: 1, data: 2, store: 3, page: 4, ref: 5, end: 6 } as const;
export type FrameType = (typeof FRAME)[keyof typeof FRAME];

export interface Frame {
  type: FrameType;
  body: Buffer;
}

export function frame(type: FrameType, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(type === FRAME.data || type === FRAME.open ? 5 : 1);
  head[0] = type;
  if (head.length === 5) head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** The fixed body length of each type; DATA and OPEN carry theirs. */
function fixedLength(type: number): number | undefined {
  if (type === FRAME.store || type === FRAME.page) return PAGE_SIZE;
  if (type === FRAME.ref) return DIGEST_BYTES;
  if (type === FRAME.end) return 0;
  return undefined;
}

const MAX_DATA = 64 * 2 ** 20;

/** Cuts a byte stream from the peer into frames; anything malformed is a 502 (the peer is broken). */
export class FrameReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: Frame[] = [];
    for (;;) {
      if (buf.length < 1) break;
      const type = buf[0];
      let head = 1;
      let len = fixedLength(type);
      if (len === undefined) {
        if (type !== FRAME.data && type !== FRAME.open) throw new TeleportError(502, `dedup link: frame type ${type}`);
        if (buf.length < 5) break;
        len = buf.readUInt32BE(1);
        if (len > MAX_DATA) throw new TeleportError(502, "dedup link: an oversized frame");
        head = 5;
      }
      if (buf.length < head + len) break;
      out.push({ type: type as FrameType, body: buf.subarray(head, head + len) });
      buf = buf.subarray(head + len);
    }
    this.pending = Buffer.from(buf);
    return out;
  }
}
