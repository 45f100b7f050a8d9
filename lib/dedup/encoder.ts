/**
 * Source side of group page dedup: each VM's migration stream is split (ram-stream.ts) and a page
 * whose content this dialog already sent in full, on any of its streams, goes as its SHA-256. The
 * set of digests is the destination's index seen from here: a page is stored there exactly when
 * it is sent here as STORE, in the one order of the dialog's single connection, and STOREs stop at
 * the agreed cap, so a REF only names a page the destination holds.
 */
import crypto from "node:crypto";
import { FRAME, frame } from "./frames";
import { RamStreamSplitter } from "./ram-stream";

export interface DedupStats {
  /** Bytes of QEMU's streams, and what crossed the link for them. */
  bytesIn: number;
  bytesOut: number;
  pages: number;
  hits: number;
  /** Pages in the index and its cap. */
  stored: number;
  capPages: number;
  /** CPU time spent encoding (splitting and hashing), ms. */
  cpuMs: number;
}

export function pageDigest(page: Buffer): Buffer {
  return crypto.createHash("sha256").update(page).digest();
}

export class DedupEncoder {
  private readonly sent = new Set<string>();
  private readonly splitters = new Map<number, RamStreamSplitter>();
  readonly stats: DedupStats;

  constructor(capPages: number) {
    this.stats = { bytesIn: 0, bytesOut: 0, pages: 0, hits: 0, stored: 0, capPages, cpuMs: 0 };
  }

  open(stream: number, vm: string): Buffer {
    this.splitters.set(stream, new RamStreamSplitter());
    return this.out(frame(FRAME.open, stream, Buffer.from(vm, "utf8")));
  }

  /** The frames that carry `chunk` of this stream. */
  encode(stream: number, chunk: Buffer): Buffer {
    const splitter = this.splitters.get(stream);
    if (!splitter) throw new Error(`dedup stream ${stream} is not open`);
    this.stats.bytesIn += chunk.length;
    return this.timed(() => this.frames(stream, splitter.push(chunk)));
  }

  /** The end of a stream: the bytes of an unfinished last item, then END. */
  end(stream: number): Buffer {
    const splitter = this.splitters.get(stream);
    if (!splitter) return Buffer.alloc(0);
    this.splitters.delete(stream);
    return Buffer.concat([this.frames(stream, splitter.end()), this.out(frame(FRAME.end, stream))]);
  }

  /** Why this stream's rest passes through plain, once it does. */
  fallback(stream: number): string | undefined {
    return this.splitters.get(stream)?.fallback;
  }

  private frames(stream: number, segments: ReturnType<RamStreamSplitter["push"]>): Buffer {
    const parts: Buffer[] = [];
    for (const seg of segments) {
      if (seg.kind === "raw") {
        parts.push(frame(FRAME.data, stream, seg.bytes));
        continue;
      }
      this.stats.pages++;
      const digest = pageDigest(seg.bytes);
      const key = digest.toString("latin1");
      if (this.sent.has(key)) {
        this.stats.hits++;
        parts.push(frame(FRAME.ref, stream, digest));
      } else if (this.sent.size < this.stats.capPages) {
        this.sent.add(key);
        this.stats.stored = this.sent.size;
        parts.push(frame(FRAME.store, stream, seg.bytes));
      } else {
        parts.push(frame(FRAME.page, stream, seg.bytes));
      }
    }
    return this.out(Buffer.concat(parts));
  }

  private out(bytes: Buffer): Buffer {
    this.stats.bytesOut += bytes.length;
    return bytes;
  }

  private timed<T>(work: () => T): T {
    const t0 = process.cpuUsage();
    try {
      return work();
    } finally {
      const d = process.cpuUsage(t0);
      this.stats.cpuMs += (d.user + d.system) / 1000;
    }
  }
}
