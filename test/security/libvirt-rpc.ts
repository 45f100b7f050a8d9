/**
 * A hostile holder of the dialog's secret, speaking libvirt's RPC itself (src/rpc/virnetprotocol.x,
 * remote_protocol.x) through the armed port's tunnel: the calls a real libvirtd would send, with
 * whatever definition and cookie the test wants instead of what libvirt would allow.
 */
import net from "node:net";

const REMOTE_PROGRAM = 0x20008086;
const CALL = 0;

export function xdrString(s: string): Buffer {
  const b = Buffer.from(s, "utf8");
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

export function rpcCall(proc: number, serial: number, payload: Buffer = Buffer.alloc(0), declared?: number): Buffer {
  const head = Buffer.concat([u32(declared ?? 28 + payload.length), u32(REMOTE_PROGRAM), u32(1), u32(proc)]);
  return Buffer.concat([head, u32(CALL), u32(serial), u32(0), payload]);
}

/** DOMAIN_MIGRATE_PREPARE_TUNNEL3_PARAMS: typed string parameters, the cookie, flags. */
export function prepareCall(serial: number, params: Array<[string, string]>, cookie: string): Buffer {
  const typed = params.map(([k, v]) => Buffer.concat([xdrString(k), u32(7), xdrString(v)]));
  // VIR_MIGRATE_LIVE | PEER2PEER | TUNNELLED | PERSIST_DEST, as virsh migrate --live --p2p --tunnelled --persistent
  const flags = 1 | 2 | 4 | 8;
  return rpcCall(304, serial, Buffer.concat([u32(params.length), ...typed, xdrString(cookie), u32(flags)]));
}

export type Outcome = number | "closed" | "timeout";

export interface RpcPeer {
  /** Send a call: its reply's status (0 OK, 1 error), "closed" when the connection ends first, or "timeout". */
  call(msg: Buffer, timeoutMs?: number): Promise<Outcome>;
  send(bytes: Buffer): void;
  /** The message of the last error reply (remote_error), for a test's failure output. */
  lastError(): string;
  closed: Promise<void>;
  end(): void;
}

export function rpcPeer(socketPath: string): Promise<RpcPeer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    let buf = Buffer.alloc(0);
    let lastError = "";
    const waiting: Array<(r: Outcome) => void> = [];
    const closed = new Promise<void>((done) => sock.once("close", () => done()));
    void closed.then(() => waiting.splice(0).forEach((w) => w("closed")));
    sock.on("error", () => undefined);
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 28 && buf.length >= buf.readUInt32BE(0)) {
        const status = buf.readUInt32BE(24);
        // remote_error: int code, int domain, remote_string message (present flag, length, bytes)
        if (status === 1 && buf.length >= 44 && buf.readUInt32BE(36) === 1)
          lastError = buf.toString("utf8", 44, 44 + buf.readUInt32BE(40));
        buf = buf.subarray(buf.readUInt32BE(0));
        waiting.shift()?.(status);
      }
    });
    sock.once("connect", () =>
      resolve({
        call: (msg, timeoutMs = 30_000) =>
          new Promise<Outcome>((r) => {
            const timer = setTimeout(() => r("timeout"), timeoutMs);
            waiting.push((v) => {
              clearTimeout(timer);
              r(v);
            });
            sock.write(msg);
          }),
        send: (bytes) => void sock.write(bytes),
        lastError: () => lastError,
        closed,
        end: () => sock.destroy(),
      }),
    );
    sock.once("error", reject);
  });
}

/** AUTH_LIST then CONNECT_OPEN("qemu:///system"), as every libvirt client starts. */
export async function openConnection(peer: RpcPeer): Promise<void> {
  if ((await peer.call(rpcCall(66, 1))) !== 0) throw new Error("AUTH_LIST failed");
  const open = Buffer.concat([u32(1), xdrString("qemu:///system"), u32(0)]);
  if ((await peer.call(rpcCall(1, 2, open))) !== 0) throw new Error("CONNECT_OPEN failed");
}
