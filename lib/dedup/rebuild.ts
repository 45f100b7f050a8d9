/**
 * Destination side of group page dedup: rebuilds each VM's exact QEMU stream from the dialog's
 * frames. STORE pages enter the index (digest computed here, never taken from the peer); a REF is
 * looked up and the stored page's digest checked again before its bytes are used. An unknown or
 * forged reference fails that stream only; its later STOREs still enter the index, which must
 * stay what the source believes it is for the dialog's other streams.
 */
import { TeleportError } from "../errors";
import { pageDigest } from "./encoder";
import { FRAME, type Frame } from "./frames";

export type Rebuilt =
  | { kind: "open"; stream: number; vm: string }
  | { kind: "data"; stream: number; bytes: Buffer }
  | { kind: "end"; stream: number }
  | { kind: "fail"; stream: number; error: TeleportError };

export interface IndexStats {
  stored: number;
  capPages: number;
  hits: number;
  /** Bytes of pages rebuilt from references (what did not cross the link, less their frames). */
  bytesSaved: number;
}

export class DedupRebuilder {
  private readonly index = new Map<string, Buffer>();
  private readonly failed = new Set<number>();
  readonly stats: IndexStats;

  constructor(capPages: number) {
    this.stats = { stored: 0, capPages, hits: 0, bytesSaved: 0 };
  }

  /** What one frame from the source means for its stream (nothing for a failed stream). */
  apply(f: Frame): Rebuilt | undefined {
    try {
      const out = this.rebuild(f);
      return this.failed.has(f.stream) ? undefined : out;
    } catch (err) {
      if (this.failed.has(f.stream)) return undefined;
      this.failed.add(f.stream);
      return { kind: "fail", stream: f.stream, error: TeleportError.from(err) };
    }
  }

  /** Stops delivering a stream (its QEMU went away); the index keeps following it. */
  fail(stream: number): void {
    this.failed.add(stream);
  }

  private rebuild(f: Frame): Rebuilt | undefined {
    switch (f.type) {
      case FRAME.open:
        this.failed.delete(f.stream);
        return { kind: "open", stream: f.stream, vm: f.body.toString("utf8") };
      case FRAME.data:
      case FRAME.page:
        return { kind: "data", stream: f.stream, bytes: f.body };
      case FRAME.store:
        return { kind: "data", stream: f.stream, bytes: this.store(f.body) };
      case FRAME.ref:
        return { kind: "data", stream: f.stream, bytes: this.lookup(f.body) };
      case FRAME.end:
        return { kind: "end", stream: f.stream };
      case FRAME.fail:
        throw new TeleportError(503, "the source's stream failed");
    }
  }

  private store(page: Buffer): Buffer {
    if (this.index.size >= this.stats.capPages) throw new TeleportError(502, "dedup: a page beyond the index cap");
    const own = Buffer.from(page); // not a view that would keep the whole received chunk alive
    this.index.set(pageDigest(own).toString("latin1"), own);
    this.stats.stored = this.index.size;
    return own;
  }

  private lookup(digest: Buffer): Buffer {
    const page = this.index.get(digest.toString("latin1"));
    if (!page) throw new TeleportError(502, "dedup: a reference to a page this dialog never received");
    if (!pageDigest(page).equals(digest)) throw new TeleportError(502, "dedup: a stored page does not match");
    this.stats.hits++;
    this.stats.bytesSaved += page.length - digest.length - 3;
    return page;
  }
}
