/**
 * Destination side of group page dedup: rebuilds each VM's exact QEMU stream from the dialog's
 * frames. STORE pages enter the index (digest computed here, never taken from the peer); a REF is
 * looked up and the stored page's digest checked again before its bytes are used. Each VM's stream
 * has its own connection, so a page sent in full on one may arrive after another's reference to
 * it: a reference to a page not here yet waits for it (bounded by waitMs). An unknown or forged
 * reference fails that stream only (its relay then drops the connection, and a reference of
 * another stream to a page that was on its way there times out: that VM fails too, never corrupts).
 */
import { TeleportError } from "../errors";
import { pageDigest } from "./encoder";
import { FRAME, type Frame } from "./frames";

export type Rebuilt =
  | { kind: "open"; vm: string }
  | { kind: "data"; bytes: Buffer }
  | { kind: "end" }
  | { kind: "fail"; error: TeleportError };

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
  /** References waiting for their page, by digest. */
  private readonly waiting = new Map<string, Array<() => void>>();
  readonly stats: IndexStats;

  /** `inflate`: the dialog's links carry deflated frames (the source's SentPages `deflate`). */
  constructor(
    capPages: number,
    private readonly waitMs = 10_000,
    readonly inflate = false,
  ) {
    this.stats = { stored: 0, capPages, hits: 0, bytesSaved: 0 };
  }

  /**
   * What one frame of a stream (the relay's number for its connection) means for it: nothing
   * once the stream failed; a promise while a reference waits for its page.
   */
  apply(stream: number, f: Frame): Rebuilt | undefined | Promise<Rebuilt | undefined> {
    try {
      if (f.type === FRAME.ref && !this.index.has(f.body.toString("latin1")) && !this.failed.has(stream))
        return this.arrival(f.body).then(
          () => this.apply(stream, f),
          (err: unknown) => this.failure(stream, err),
        );
      const out = this.rebuild(f);
      return this.failed.has(stream) ? undefined : out;
    } catch (err) {
      return this.failure(stream, err);
    }
  }

  /** A stream's first failure, once. */
  private failure(stream: number, err: unknown): Rebuilt | undefined {
    if (this.failed.has(stream)) return undefined;
    this.failed.add(stream);
    return { kind: "fail", error: TeleportError.from(err) };
  }

  /** Settles when the page of `digest` is stored, or fails after waitMs. */
  private arrival(digest: Buffer): Promise<void> {
    const key = digest.toString("latin1");
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const list = this.waiting.get(key)?.filter((w) => w !== done);
        if (list?.length) this.waiting.set(key, list);
        else this.waiting.delete(key);
        reject(new TeleportError(502, "dedup: a reference to a page this dialog never received"));
      }, this.waitMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.waiting.set(key, [...(this.waiting.get(key) ?? []), done]);
    });
  }

  private rebuild(f: Frame): Rebuilt | undefined {
    switch (f.type) {
      case FRAME.open:
        return { kind: "open", vm: f.body.toString("utf8") };
      case FRAME.data:
      case FRAME.page:
        return { kind: "data", bytes: f.body };
      case FRAME.store:
        return { kind: "data", bytes: this.store(f.body) };
      case FRAME.ref:
        return { kind: "data", bytes: this.lookup(f.body) };
      case FRAME.end:
        return { kind: "end" };
    }
  }

  private store(page: Buffer): Buffer {
    if (this.index.size >= this.stats.capPages) throw new TeleportError(502, "dedup: a page beyond the index cap");
    const own = Buffer.from(page); // not a view that would keep the whole received chunk alive
    const key = pageDigest(own).toString("latin1");
    this.index.set(key, own);
    this.stats.stored = this.index.size;
    for (const done of this.waiting.get(key) ?? []) done();
    this.waiting.delete(key);
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
