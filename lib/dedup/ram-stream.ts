/**
 * Splits a QEMU 7.2 migration stream (migration/savevm.c, ram.c) into the 4 KiB page contents of
 * the "ram" section's RAM_SAVE_FLAG_PAGE records and the bytes around them, which are carried as
 * they are. Splitting never changes a byte: joining the segments gives the input back, so a wrong
 * guess costs savings, never memory. Anything the splitter does not fully know (device state,
 * which carries no length; an unknown flag, section or subsection) makes the rest of the stream
 * pass through in one piece.
 */

export const PAGE_SIZE = 4096;

const FILE_MAGIC = 0x5145564d; // "QEVM"
const FILE_VERSION = 3;
const VM = { start: 0x01, part: 0x02, end: 0x03, subsection: 0x05, configuration: 0x07, command: 0x08, footer: 0x7e };
const FLAG = { zero: 0x02, memSize: 0x04, page: 0x08, eos: 0x10, cont: 0x20, xbzrle: 0x40, compress: 0x100 };
const FLAG_MASK = PAGE_SIZE - 1;
/** configuration's subsections (savevm.c) and how to skip their fields; others end the parse. */
const CONFIG_SUBSECTIONS = new Set([
  "configuration/target-page-bits",
  "configuration/capabilities",
  "configuration/uuid",
]);

export type Segment = { kind: "raw"; bytes: Buffer } | { kind: "page"; bytes: Buffer };

/** Thrown by a read past the bytes at hand: the item is tried again with more. */
class NeedMore extends Error {}
/** Thrown at something the splitter does not know: the rest passes through. */
class Unknown extends Error {}

class Reader {
  constructor(
    private readonly buf: Buffer,
    public pos: number,
  ) {}
  private need(n: number): number {
    if (this.pos + n > this.buf.length) throw new NeedMore();
    const at = this.pos;
    this.pos += n;
    return at;
  }
  u8(): number {
    return this.buf[this.need(1)];
  }
  peek8(): number {
    if (this.pos >= this.buf.length) throw new NeedMore();
    return this.buf[this.pos];
  }
  be16(): number {
    return this.buf.readUInt16BE(this.need(2));
  }
  be32(): number {
    return this.buf.readUInt32BE(this.need(4));
  }
  be64(): bigint {
    return this.buf.readBigUInt64BE(this.need(8));
  }
  skip(n: number): void {
    this.need(n);
  }
  str(n: number): string {
    const at = this.need(n);
    return this.buf.toString("latin1", at, at + n);
  }
}

type State = "header" | "top" | "ram" | "through";

export class RamStreamSplitter {
  private pending: Buffer = Buffer.alloc(0);
  private state: State = "header";
  private ramSection: number | undefined;
  /** The block ids QEMU announced in MEM_SIZE; a page of another one ends the parse. */
  private readonly blocks = new Set<string>();
  private lastBlock: string | undefined;
  /** Why the rest of the stream passes through, once it does. */
  fallback: string | undefined;
  pages = 0;

  /** The segments `chunk` completes; bytes of an unfinished item wait for the next push. */
  push(chunk: Buffer): Segment[] {
    const buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: Segment[] = [];
    let rawFrom = 0;
    let pos = 0;
    while (pos < buf.length && this.state !== "through") {
      const r = new Reader(buf, pos);
      let page: number | undefined;
      try {
        page = this.item(r);
      } catch (err) {
        if (err instanceof NeedMore) break;
        this.fallback = err instanceof Unknown ? err.message : String(err);
        this.state = "through";
        break;
      }
      if (page !== undefined) {
        if (page > rawFrom) out.push({ kind: "raw", bytes: buf.subarray(rawFrom, page) });
        out.push({ kind: "page", bytes: buf.subarray(page, page + PAGE_SIZE) });
        rawFrom = page + PAGE_SIZE;
        this.pages++;
      }
      pos = r.pos;
    }
    if (this.state === "through") pos = buf.length;
    if (pos > rawFrom) out.push({ kind: "raw", bytes: buf.subarray(rawFrom, pos) });
    this.pending = Buffer.from(buf.subarray(pos));
    return out;
  }

  /** The bytes of an unfinished last item (a cut stream): they pass through as they are. */
  end(): Segment[] {
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    return rest.length ? [{ kind: "raw", bytes: rest }] : [];
  }

  /** Reads one item; returns where its page content starts when it is a PAGE record. */
  private item(r: Reader): number | undefined {
    if (this.state === "header") {
      if (r.be32() !== FILE_MAGIC || r.be32() !== FILE_VERSION) throw new Unknown("not a QEVM v3 stream");
      this.state = "top";
      return undefined;
    }
    if (this.state === "top") return this.topItem(r);
    return this.ramItem(r);
  }

  private topItem(r: Reader): undefined {
    const type = r.u8();
    if (type === VM.configuration) {
      r.skip(r.be32()); // the machine type
      this.configSubsections(r);
    } else if (type === VM.command) {
      r.be16();
      r.skip(r.be16());
    } else if (type === VM.footer) {
      r.be32();
    } else if (type === VM.start) {
      const id = r.be32();
      const name = r.str(r.u8());
      r.skip(8); // instance and version
      if (name !== "ram" || this.ramSection !== undefined) throw new Unknown(`section "${name}" starts`);
      this.ramSection = id;
      this.state = "ram";
    } else if (type === VM.part || type === VM.end) {
      const id = r.be32();
      if (id !== this.ramSection) throw new Unknown(`section ${id} continues`);
      this.state = "ram";
    } else {
      throw new Unknown(`device state (record type ${type})`); // FULL, EOF and the like carry no length
    }
    return undefined;
  }

  private configSubsections(r: Reader): void {
    while (r.peek8() === VM.subsection) {
      r.u8();
      const name = r.str(r.u8());
      r.be32(); // version
      if (!CONFIG_SUBSECTIONS.has(name)) throw new Unknown(`configuration subsection "${name}"`);
      if (name === "configuration/target-page-bits") {
        if (r.be32() !== 12) throw new Unknown("target pages are not 4 KiB");
      } else if (name === "configuration/capabilities") {
        for (let n = r.be32(); n > 0; n--) r.skip(r.u8());
      } else {
        r.skip(16); // uuid
      }
    }
  }

  private ramItem(r: Reader): number | undefined {
    const word = r.be64();
    const flags = Number(word & BigInt(FLAG_MASK));
    const kind = flags & ~FLAG.cont;
    if (kind === FLAG.eos && flags === FLAG.eos) {
      this.state = "top";
      return undefined;
    }
    if (kind === FLAG.memSize && flags === FLAG.memSize) {
      this.memSize(r, word - BigInt(flags));
      return undefined;
    }
    if (flags & FLAG.cont) {
      if (this.lastBlock === undefined) throw new Unknown("a page continues no block");
    } else {
      const block = r.str(r.u8());
      if (!this.blocks.has(block)) throw new Unknown(`a page of unknown block "${block}"`);
      this.lastBlock = block;
    }
    if (kind === FLAG.page) {
      const at = r.pos;
      r.skip(PAGE_SIZE);
      return at;
    }
    if (kind === FLAG.zero) r.u8();
    else if (kind === FLAG.xbzrle) {
      if (r.u8() !== 1) throw new Unknown("an XBZRLE page of another encoding");
      r.skip(r.be16());
    } else if (kind === FLAG.compress) r.skip(r.be32());
    else throw new Unknown(`ram flags 0x${flags.toString(16)}`);
    return undefined;
  }

  /** MEM_SIZE's block list: id and length per block until the lengths make the total. */
  private memSize(r: Reader, total: bigint): void {
    let sum = 0n;
    const ids: string[] = [];
    while (sum < total) {
      ids.push(r.str(r.u8()));
      sum += r.be64();
    }
    if (sum !== total) throw new Unknown("a block list that does not add up (post-copy or ignore-shared)");
    for (const id of ids) this.blocks.add(id);
  }
}
