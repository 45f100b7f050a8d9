/**
 * The source agent's view of its libvirtd's control connection to the destination (native
 * migrations): the moment the destination's Finish succeeded, which is when the VM runs there.
 * `virsh migrate` returns only after the Confirm phase that follows, in which the source libvirtd
 * kills its QEMU and removes its cgroup (virProcessKillPainfully polls every 200 ms; 1.4-2.4 s on
 * the lab's loaded machine): a wait for the source's cleanup, not for the move. The migration's
 * figures come from the statistics the source libvirtd sends in Finish3's cookie (QEMU's counters
 * at completion), so nothing has to ask the source libvirtd, whose domain is locked during Confirm.
 *
 * libvirt's RPC framing as in libvirt-rpc-gate.ts: u32 length, six u32 header words, payload.
 */
import { FINISH3_PARAMS, parseMigrationCall, REMOTE_PROGRAM } from "./libvirt-rpc-gate";
import { child, parseLibvirtXml } from "./libvirt-xml";

const HEADER = 28;
const REPLY = 1;
const OK = 0;
/** Finish3's call is small (a cookie, a few parameters); anything larger is not read, only passed. */
const MAX_READ = 4 * 1024 * 1024;

/** What the source libvirtd told the destination at Finish (its cookie's <statistics>), ms and bytes. */
export interface FinishStats {
  timeElapsedMs?: number;
  downtimeMs?: number;
  /** When the source stopped the VM (epoch ms, the source host's clock). */
  stoppedAt?: number;
  memoryBytes?: number;
  diskBytes?: number;
}

/** Splits one direction of the connection into whole messages (header and payload), skipping large ones. */
class Frames {
  private buf = Buffer.alloc(0);
  private skip = 0;

  constructor(private readonly onMessage: (head: Buffer, payload: Buffer) => void) {}

  push(chunk: Buffer): void {
    if (this.skip >= chunk.length) {
      this.skip -= chunk.length;
      return;
    }
    this.buf = Buffer.concat([this.buf, chunk.subarray(this.skip)]);
    this.skip = 0;
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len < HEADER || len > MAX_READ) {
        // not for us to judge (the destination's gate does): pass it unread
        this.skip = Math.max(0, len - this.buf.length);
        this.buf = this.buf.subarray(Math.min(len, this.buf.length));
        continue;
      }
      if (this.buf.length < len) return;
      this.onMessage(this.buf.subarray(0, HEADER), this.buf.subarray(HEADER, len));
      this.buf = this.buf.subarray(len);
    }
  }
}

/** The numbers of a Finish3 call's cookie (`<qemu-migration><statistics>`), what of them is there. */
export function finishStats(cookie: string): FinishStats {
  const doc = parseLibvirtXml(cookie.endsWith("\0") ? cookie.slice(0, -1) : cookie);
  const stats = doc.ok ? child(doc.root, "statistics") : undefined;
  const num = (name: string) => {
    const text = child(stats, name)?.text;
    return text !== undefined && /^\d+$/.test(text) ? Number(text) : undefined;
  };
  return {
    timeElapsedMs: num("time_elapsed"),
    downtimeMs: num("downtime"),
    stoppedAt: num("stopped"),
    memoryBytes: num("memory_processed"),
    diskBytes: num("disk_processed"),
  };
}

export class FinishWatch {
  /** Resolves when the destination answered Finish3 with success: the VM runs there. */
  readonly finished: Promise<FinishStats>;
  private resolve!: (s: FinishStats) => void;
  private stats: FinishStats = {};
  private readonly calls = new Frames((head, payload) => {
    const [prog, proc, type] = [head.readUInt32BE(4), head.readInt32BE(12), head.readInt32BE(16)];
    if (prog !== REMOTE_PROGRAM || proc !== FINISH3_PARAMS || type !== 0) return;
    try {
      this.stats = finishStats(parseMigrationCall(proc, payload).cookie);
    } catch {
      // unreadable: the figures fall back to what the source's own job says
    }
  });
  private readonly replies = new Frames((head) => {
    const [prog, proc, type, status] = [
      head.readUInt32BE(4),
      head.readInt32BE(12),
      head.readInt32BE(16),
      head.readInt32BE(24),
    ];
    if (prog === REMOTE_PROGRAM && proc === FINISH3_PARAMS && type === REPLY && status === OK) this.resolve(this.stats);
  });

  constructor() {
    this.finished = new Promise((resolve) => (this.resolve = resolve));
  }

  /** Bytes the source libvirtd sent the destination. */
  sent(chunk: Buffer): void {
    this.calls.push(chunk);
  }

  /** Bytes the destination's libvirtd answered. */
  answered(chunk: Buffer): void {
    this.replies.push(chunk);
  }
}
