/**
 * What a connection through the armed libvirt port may ask of the destination's libvirtd: the
 * few RPC procedures of one peer-to-peer tunnelled migration, and nothing else. The tunnel
 * (libvirt-tunnel.ts) feeds every byte the source sends through `RpcGate.push` before it reaches
 * libvirtd; the first message outside the list closes the connection.
 *
 * libvirt's RPC framing (src/rpc/virnetprotocol.x): each message is a big-endian u32 length
 * (counting itself), then a header of six u32 (program, version, procedure, type, serial,
 * status), then the XDR payload.
 */
import { LIBVIRT_XML_MAX_BYTES } from "./libvirt-xml";

/** libvirt's remote driver program and the keepalive program (PING/PONG). */
export const REMOTE_PROGRAM = 0x20008086;
export const KEEPALIVE_PROGRAM = 0x6b656570;

/** Message types (virNetMessageType). */
const CALL = 0;
const STREAM = 3;

/** Procedures a p2p tunnelled migration (protocol v3 with parameters) needs on the destination. */
export const MIGRATION_PROCEDURES: ReadonlyMap<number, string> = new Map([
  [1, "CONNECT_OPEN"],
  [2, "CONNECT_CLOSE"],
  [60, "CONNECT_SUPPORTS_FEATURE"],
  [66, "AUTH_LIST"],
  [303, "DOMAIN_MIGRATE_PREPARE3_PARAMS"],
  [304, "DOMAIN_MIGRATE_PREPARE_TUNNEL3_PARAMS"],
  [306, "DOMAIN_MIGRATE_FINISH3_PARAMS"],
  [360, "CONNECT_REGISTER_CLOSE_CALLBACK"],
  [361, "CONNECT_UNREGISTER_CLOSE_CALLBACK"],
]);
/** Native (not tunnelled) p2p: libvirtd prepares QEMU to listen on the call's migrate_uri; the stream goes apart. */
export const PREPARE3_PARAMS = 303;
export const PREPARE_TUNNEL3_PARAMS = 304;
export const FINISH3_PARAMS = 306;
/** The calls whose parameters are checked (and so buffered whole). */
const CHECKED: ReadonlySet<number> = new Set([PREPARE3_PARAMS, PREPARE_TUNNEL3_PARAMS, FINISH3_PARAMS]);

const HEADER = 28;
/** libvirt's own limit on one message (VIR_NET_MESSAGE_MAX) plus its length word. */
export const MAX_MESSAGE = 32 * 1024 * 1024 + 4;
/**
 * The most a checked call (buffered whole before a byte goes on) can hold and still pass: three
 * XML documents (destination_xml, persistent_xml, the cookie) and a few short parameters.
 */
export const MAX_MIGRATION_CALL = 3 * LIBVIRT_XML_MAX_BYTES + 64 * 1024;

/** A migration call's string-valued typed parameters (destination_xml, ...) and its cookie. */
export interface MigrationCall {
  procedure: number;
  params: Map<string, string>;
  /** The disks a copy names (`migrate_disks`, the one string parameter libvirt repeats), in order. */
  disks?: string[];
  /** libvirt's migration cookie: XML that may carry the persistent domain definition. */
  cookie: string;
}

/** Decide on a migration call: a reason to refuse, or undefined. */
export type ParamsCheck = (call: MigrationCall) => string | undefined;

/** The disks to copy: a list, one parameter per disk (VIR_MIGRATE_PARAM_MIGRATE_DISKS). */
const MIGRATE_DISKS = "migrate_disks";

/**
 * A *_PARAMS call's payload: `remote_typed_param params<>; opaque cookie_in<>; ...` (XDR).
 * Non-string parameters are skipped.
 */
export function parseMigrationCall(procedure: number, payload: Buffer): MigrationCall {
  const params = new Map<string, string>();
  const disks: string[] = [];
  let at = 0;
  const u32 = (): number => {
    if (at + 4 > payload.length) throw new Error("truncated typed parameters");
    const v = payload.readUInt32BE(at);
    at += 4;
    return v;
  };
  const str = (): string => {
    const len = u32();
    if (at + len > payload.length) throw new Error("truncated string");
    const s = payload.toString("utf8", at, at + len);
    at += len + ((4 - (len % 4)) % 4);
    return s;
  };
  const count = u32();
  if (count > 64) throw new Error(`${count} parameters (libvirt allows 64)`);
  for (let i = 0; i < count; i++) {
    const field = str();
    const type = u32();
    if (type === 7 && field === MIGRATE_DISKS) disks.push(str());
    // libvirt reads the first of a repeated parameter: one value per name, or what we judged is not what it runs
    else if (type === 7 && params.has(field)) throw new Error(`parameter ${field} is repeated`);
    else if (type === 7) params.set(field, str());
    else if (type === 1 || type === 2 || type === 6) at += 4;
    else if (type >= 3 && type <= 5) at += 8;
    else throw new Error(`parameter ${field} has unknown type ${type}`);
  }
  return { procedure, params, disks, cookie: str() };
}

export class RpcGate {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes of an admitted message still to come. */
  private passing = 0;
  private refused: string | undefined;
  /** Procedure numbers admitted, in order (first call of each), for the debug log. */
  readonly seen: number[] = [];

  constructor(private readonly check: ParamsCheck) {}

  /** Bytes to forward to libvirtd now; throws with the reason when the connection must close. */
  push(chunk: Buffer): Buffer[] {
    if (this.refused) throw new Error(this.refused);
    const out: Buffer[] = [];
    let rest = chunk;
    while (rest.length) {
      if (this.passing > 0) {
        const n = Math.min(this.passing, rest.length);
        out.push(rest.subarray(0, n));
        this.passing -= n;
        rest = rest.subarray(n);
        continue;
      }
      this.pending.push(rest);
      this.pendingBytes += rest.length;
      rest = Buffer.alloc(0);
      if (this.pendingBytes < 4) break;
      // the declared length is judged before anything is buffered for it
      const len = this.peek(4).readUInt32BE(0);
      if (len < HEADER || len > MAX_MESSAGE) this.refuse(`not a libvirt RPC message (length ${len})`);
      if (this.pendingBytes < HEADER) break;
      const head = this.peek(HEADER);
      if (this.needsWhole(head)) {
        if (len > MAX_MIGRATION_CALL)
          this.refuse(`a migration call of ${len} bytes (at most ${MAX_MIGRATION_CALL} can pass)`);
        if (this.pendingBytes < len) break; // chunks kept as they came: one copy when the call is whole
      }
      const msg = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
      this.pending = [];
      this.pendingBytes = 0;
      const why = this.judge(msg, len);
      if (why) this.refuse(why);
      const take = Math.min(len, msg.length);
      out.push(msg.subarray(0, take));
      this.passing = len - take;
      rest = msg.subarray(take);
    }
    return out;
  }

  private refuse(why: string): never {
    this.refused = why;
    this.pending = [];
    throw new Error(why);
  }

  /** At least the first `n` pending bytes in one buffer (n is small: the header). */
  private peek(n: number): Buffer {
    if (this.pending[0].length < n) this.pending = [Buffer.concat(this.pending)];
    return this.pending[0];
  }

  /** Calls whose parameters are checked must be seen whole before a byte goes on. */
  private needsWhole(head: Buffer): boolean {
    const [prog, proc, type] = [head.readUInt32BE(4), head.readInt32BE(12), head.readInt32BE(16)];
    return prog === REMOTE_PROGRAM && type === CALL && CHECKED.has(proc);
  }

  private judge(msg: Buffer, len: number): string | undefined {
    const prog = msg.readUInt32BE(4);
    const proc = msg.readInt32BE(12);
    const type = msg.readInt32BE(16);
    if (prog === KEEPALIVE_PROGRAM) return undefined;
    if (prog !== REMOTE_PROGRAM) return `RPC program 0x${prog.toString(16)} is not libvirt's remote driver`;
    // the migration stream: data the source pushes into PREPARE_TUNNEL3's stream
    if (type === STREAM) return proc === PREPARE_TUNNEL3_PARAMS ? undefined : `stream of procedure ${proc}`;
    if (type !== CALL) return `message type ${type} of procedure ${proc}`;
    const name = MIGRATION_PROCEDURES.get(proc);
    if (!name) return `procedure ${proc} is not part of a migration`;
    if (!this.seen.includes(proc)) this.seen.push(proc);
    if (!CHECKED.has(proc)) return undefined;
    let call: MigrationCall;
    try {
      call = parseMigrationCall(proc, msg.subarray(HEADER, len));
    } catch (err) {
      return `${name}: ${(err as Error).message}`;
    }
    const why = this.check(call);
    return why && `${name}: ${why}`;
  }
}
