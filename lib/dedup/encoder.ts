/**
 * Source side of group page dedup: each VM's migration stream is split (ram-stream.ts) and a page
 * whose content this dialog already sent in full, on any of its streams, goes as its SHA-256. The
 * dialog's SentPages is the destination's index seen from here: a page is stored there exactly
 * when it is sent as STORE, and STOREs stop at the agreed cap, so a REF only names a page the
 * destination holds or will (one sent on another VM's connection may arrive later: it waits there).
 */
import crypto from "node:crypto";
import { FRAME, frame } from "./frames";
import { RamStreamSplitter, type Segment } from "./ram-stream";

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
  /** Bytes on the link after the relay's deflate (bytesOut when the link is not deflated). */
  linkBytes: number;
}

export function pageDigest(page: Buffer): Buffer {
  return crypto.createHash("sha256").update(page).digest();
}

/** One dialog's pages sent in full, shared by its VMs' encoders. */
export class SentPages {
  private readonly sent = new Set<string>();
  readonly stats: DedupStats;

  /**
   * `deflate`: the dialog's relays also deflate the frames on the link (zlib level 1, SPEC.md 5.8),
   * for the bytes dedup leaves; the destination's DedupRebuilder must say the same.
   */
  constructor(
    capPages: number,
    readonly deflate = false,
  ) {
    this.stats = { bytesIn: 0, bytesOut: 0, pages: 0, hits: 0, stored: 0, capPages, cpuMs: 0, linkBytes: 0 };
  }

  /** The frame that carries this page. */
  pageFrame(page: Buffer): Buffer {
    this.stats.pages++;
    const digest = pageDigest(page);
    const key = digest.toString("latin1");
    if (this.sent.has(key)) {
      this.stats.hits++;
      return frame(FRAME.ref, digest);
    }
    if (this.sent.size >= this.stats.capPages) return frame(FRAME.page, page);
    this.sent.add(key);
    this.stats.stored = this.sent.size;
    return frame(FRAME.store, page);
  }
}

/** One VM's stream to frames. */
export class StreamEncoder {
  private readonly splitter = new RamStreamSplitter();

  constructor(private readonly pages: SentPages) {}

  open(vm: string): Buffer {
    return this.out(frame(FRAME.open, Buffer.from(vm, "utf8")));
  }

  /** The frames that carry `chunk`. */
  encode(chunk: Buffer): Buffer {
    this.pages.stats.bytesIn += chunk.length;
    // encoding is synchronous: its wall time is this thread's CPU time (process.cpuUsage per chunk
    // cost 0.4 s of 5 in bench:dedup)
    const t0 = performance.now();
    const out = this.frames(this.splitter.push(chunk));
    this.pages.stats.cpuMs += performance.now() - t0;
    return out;
  }

  /** The end of the stream: the bytes of an unfinished last item, then END. */
  end(): Buffer {
    return Buffer.concat([this.frames(this.splitter.end()), this.out(frame(FRAME.end))]);
  }

  /** Why the rest of the stream passes through plain, once it does. */
  get fallback(): string | undefined {
    return this.splitter.fallback;
  }

  private frames(segments: Segment[]): Buffer {
    const parts = segments.map((s) => (s.kind === "raw" ? frame(FRAME.data, s.bytes) : this.pages.pageFrame(s.bytes)));
    return this.out(Buffer.concat(parts));
  }

  private out(bytes: Buffer): Buffer {
    this.pages.stats.bytesOut += bytes.length;
    return bytes;
  }
}
