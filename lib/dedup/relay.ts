/**
 * The dedup relays of one VM's migration (nrdl/SPEC.md 5.8). Source: QEMU migrates in plain to a
 * unix socket in a private (0700) folder; the relay encodes the stream (encoder.ts) onto a TLS-PSK
 * connection keyed by the VM's one-time secret, as QEMU's own TLS would be. Destination: the armed
 * port takes exactly one connection that proves the secret, and the rebuilt stream goes into the
 * incoming QEMU's unix socket; QEMU's return path flows back unchanged. Any failure on either side
 * drops both connections, which QEMU reports as a failed migration: the VM runs on at the source.
 */
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import type { Readable, TransformOptions, Writable } from "node:stream";
import tls from "node:tls";
import zlib from "node:zlib";
import { TeleportError } from "../errors";
import { migrationPsk, PSK_TLS, PSK_USER } from "../hypervisor/qemu-tls";
import { type SentPages, StreamEncoder } from "./encoder";
import { FrameReader } from "./frames";
import type { DedupRebuilder } from "./rebuild";

export interface RelayEnd {
  /** Settles when the stream ended: resolves when it went through whole, rejects when it failed. */
  done: Promise<void>;
  close(): Promise<void>;
}

export interface SourceRelay extends RelayEnd {
  /** QEMU's migration URI: `unix:` the relay's socket. */
  uri: string;
  /** Why the stream passed through plain from some point on (the splitter's reason), once it did. */
  fallback(): string | undefined;
}

function settle(): { done: Promise<void>; ok: () => void; fail: (e: unknown) => void } {
  let ok = () => {};
  let fail: (e: unknown) => void = () => {};
  const done = new Promise<void>((resolve, reject) => ((ok = resolve), (fail = reject)));
  done.catch(() => undefined); // a caller that only closes need not await it
  return { done, ok, fail };
}

/** zlib's output chunks and the deflater's buffer: frames in chunks as large as QEMU's writes. */
const ZLIB_CHUNK = 256 * 1024;

/** Writes and pauses the reader while the writer's buffer is full (the slow side sets the pace). */
function paced(reader: Readable, writer: Writable, bytes: Buffer, flush?: () => void): void {
  if (!bytes.length) return;
  const room = writer.write(bytes);
  flush?.();
  if (!room && !reader.isPaused()) {
    reader.pause();
    writer.once("drain", () => reader.resume());
  }
}

/**
 * The link's sending side: the link itself, or a deflater in front of it (level 1: the relay must
 * keep up with QEMU). Each write is flushed at once (Z_SYNC_FLUSH, 5 bytes): the switchover's last
 * bytes may not wait in the deflater. `sent` counts the bytes the link carries.
 */
function sender(link: net.Socket, deflate: boolean, sent: (n: number) => void) {
  if (!deflate) return { wire: link as Writable, flush: undefined, queued: () => link.writableLength };
  // QEMU's chunks whole (its default 16 KiB would turn each into a write-drain round trip)
  // (zlib hands its options to its Transform, whose buffer bound @types/node does not list)
  const options: zlib.ZlibOptions & TransformOptions = {
    level: 1,
    chunkSize: ZLIB_CHUNK,
    writableHighWaterMark: ZLIB_CHUNK * 4,
  };
  const z = zlib.createDeflateRaw(options);
  z.on("data", (c: Buffer) => sent(c.length));
  z.pipe(link);
  return {
    wire: z as Writable,
    flush: () => z.flush(zlib.constants.Z_SYNC_FLUSH),
    queued: () => z.writableLength + link.writableLength,
  };
}

/** Source: a relay for one VM's outgoing stream to `host:port`; the folder `dir` is its own. */
export async function startSourceRelay(opts: {
  vm: string;
  pages: SentPages;
  host: string;
  port: number;
  secret: string;
  dir: string;
}): Promise<SourceRelay> {
  const psk = migrationPsk(opts.secret);
  fs.rmSync(opts.dir, { recursive: true, force: true });
  fs.mkdirSync(opts.dir, { mode: 0o700 });
  const socket = path.join(opts.dir, "out.sock");
  const end = settle();
  const encoder = new StreamEncoder(opts.pages);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((qemu) => {
    server.close(); // one stream per relay
    const link = tls.connect({
      ...PSK_TLS,
      host: opts.host,
      port: opts.port,
      pskCallback: () => ({ psk, identity: PSK_USER }),
      checkServerIdentity: () => undefined,
    });
    sockets.add(qemu).add(link);
    // The destination's QEMU closes once it loaded the stream (its return path said how it went):
    // then QEMU here has nothing left to send. A link that ends while QEMU still sends, or with
    // QEMU's bytes still queued for it, was cut (a FIN, not only a reset): QEMU's socket is
    // destroyed so that its migration fails at once instead of blocking on a full socket.
    let qemuEnded = false;
    let linkEnded = false;
    const { deflate, stats } = opts.pages;
    const out = sender(link, deflate, (n) => (stats.linkBytes += n));
    const send = (bytes: Buffer) => {
      if (!deflate) stats.linkBytes += bytes.length;
      return bytes;
    };
    const fail = (why: string) => {
      qemu.destroy();
      out.wire.destroy();
      link.destroy();
      end.fail(new TeleportError(503, `dedup relay of ${opts.vm}: ${why}`));
    };
    const cut = () => fail("the link closed mid-stream");
    if (deflate) out.wire.on("error", (e) => fail(`the deflater: ${e.message}`));
    out.wire.write(send(encoder.open(opts.vm)));
    qemu.on("data", (chunk: Buffer) =>
      linkEnded ? cut() : paced(qemu, out.wire, send(encoder.encode(chunk)), out.flush),
    );
    qemu.on("end", () => {
      qemuEnded = true;
      if (link.writable) out.wire.end(send(encoder.end()));
    });
    link.on("data", (chunk: Buffer) => paced(link, qemu, chunk)); // the return path
    link.on("end", () => {
      linkEnded = true;
      if (!qemuEnded && out.queued() > 0) return cut();
      qemu.resume();
      qemu.end();
    });
    qemu.on("error", (e) => fail(`QEMU's side: ${e.message}`));
    link.on("error", (e) => fail(`the link: ${e.message}`));
    // through whole once both sockets closed after an end: QEMU's closing alone leaves bytes on their way
    let closed = 0;
    const closedOne = () => ++closed === 2 && end.ok();
    link.on("close", () => (qemuEnded || linkEnded ? closedOne() : cut()));
    qemu.on("close", () => (qemuEnded || linkEnded ? closedOne() : fail("QEMU's side closed mid-stream")));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socket, () => resolve());
  });
  return {
    uri: `unix:${socket}`,
    done: end.done,
    fallback: () => encoder.fallback,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      fs.rmSync(opts.dir, { recursive: true, force: true });
    },
  };
}

export interface DestinationRelay extends RelayEnd {
  port: number;
}

let streams = 0;

/**
 * Destination: listen on address:port for the one connection of `vm` that proves the secret and
 * rebuild its stream into `incoming` (QEMU's `-incoming unix:` socket). Others are refused.
 */
export async function listenDestinationRelay(opts: {
  vm: string;
  index: DedupRebuilder;
  address: string;
  port: number;
  secret: string;
  incoming: string;
  onRefused: (why: string) => void;
}): Promise<DestinationRelay> {
  const psk = migrationPsk(opts.secret);
  const end = settle();
  const sockets = new Set<net.Socket>();
  const server = tls.createServer(
    { ...PSK_TLS, pskCallback: (_socket, identity) => (identity === PSK_USER ? psk : null) },
    (link) => {
      server.close();
      const stream = streams++;
      const qemu = net.connect(opts.incoming);
      sockets.add(link).add(qemu);
      const reader = new FrameReader();
      let queue = Promise.resolve();
      let ended = false;
      const fail = (why: string) => {
        link.destroy();
        qemu.destroy();
        end.fail(new TeleportError(503, `dedup relay of ${opts.vm}: ${why}`));
      };
      // frames in order, one at a time: a reference may wait for its page from another stream
      // a chunk's rebuilt bytes go to QEMU in one write (one per page cost a syscall each), and
      // before any wait for a page from another stream, so that QEMU never waits on what is here
      let rebuilt: Buffer[] = [];
      const flush = async () => {
        if (!rebuilt.length) return;
        const bytes = rebuilt.length === 1 ? rebuilt[0] : Buffer.concat(rebuilt);
        rebuilt = [];
        if (!qemu.write(bytes)) await once(qemu, "drain");
      };
      const take = async (chunk: Buffer) => {
        for (const f of reader.push(chunk)) {
          let r = opts.index.apply(stream, f);
          if (r instanceof Promise) {
            await flush();
            r = await r;
          }
          if (r?.kind === "data") rebuilt.push(r.bytes);
          else if (r?.kind === "open" && r.vm !== opts.vm) throw new TeleportError(403, `a stream for ${r.vm}`);
          else if (r?.kind === "fail") throw r.error;
          else if (r?.kind === "end") ended = true;
        }
        await flush();
      };
      // the frames as they came, or inflated (a corrupt deflate stream fails it like a bad frame)
      const input: Readable = opts.index.inflate ? link.pipe(zlib.createInflateRaw({ chunkSize: ZLIB_CHUNK })) : link;
      if (input !== link) input.on("error", (e) => fail(`the inflater: ${e.message}`));
      input.on("data", (chunk: Buffer) => {
        input.pause();
        queue = queue
          .then(() => take(chunk))
          .then(
            () => void input.resume(),
            (e: unknown) => fail(TeleportError.from(e).message),
          );
      });
      input.on("end", () => void queue.then(() => (ended ? qemu.end() : fail("the link closed mid-stream"))));
      qemu.on("data", (chunk: Buffer) => paced(qemu, link, chunk)); // the return path
      // QEMU closes once it loaded the stream, before the source's END: its return path said how it
      // went, so the link is ended (never destroyed, which would drop that answer) and a write to
      // the closed socket (EPIPE) is no failure of ours
      let qemuError: Error | undefined;
      qemu.on("error", (e) => (qemuError = e));
      qemu.on("close", () => {
        link.end();
        if (qemuError && !ended) end.fail(new TeleportError(503, `dedup relay of ${opts.vm}: ${qemuError.message}`));
        else end.ok();
      });
      link.on("error", (e) => fail(`the link: ${e.message}`));
    },
  );
  server.on("tlsClientError", (e) => opts.onRefused(`a connection without the secret: ${e.message}`));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.address, () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    done: end.done,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
