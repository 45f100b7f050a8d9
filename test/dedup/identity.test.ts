/**
 * Group page dedup on real QEMU 7.2 streams: two test guests' streams, encoded on one dialog and
 * rebuilt, come out byte for byte as QEMU wrote them, with references for the pages the second VM
 * shares with the first; a cut or garbled stream passes through unchanged; a forged reference
 * fails that stream only.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { SentPages, StreamEncoder } from "../../lib/dedup/encoder";
import { FRAME, frame, FrameReader } from "../../lib/dedup/frames";
import { PAGE_SIZE, RamStreamSplitter } from "../../lib/dedup/ram-stream";
import { DedupRebuilder, type Rebuilt } from "../../lib/dedup/rebuild";
import { listenDestinationRelay, startSourceRelay } from "../../lib/dedup/relay";
import { captureStreams } from "./capture";

jest.setTimeout(60_000);

let streams: Map<string, Buffer>;

beforeAll(async () => {
  streams = await captureStreams(["vm1", "vm2"], 4000);
});

/** Feeds each stream in chunks of `chunk` bytes (interleaved), as sockets would, one reader each. */
async function roundTrip(inputs: Buffer[], chunk: number, cap = 1 << 20) {
  const pages = new SentPages(cap);
  const dec = new DedupRebuilder(cap, 50);
  const encoders = inputs.map(() => new StreamEncoder(pages));
  const readers = inputs.map(() => new FrameReader());
  const out = inputs.map(() => [] as Buffer[]);
  const events: Rebuilt[] = [];
  const deliver = async (i: number, bytes: Buffer) => {
    for (const f of readers[i].push(bytes)) {
      const r = await dec.apply(i, f);
      if (r) events.push(r);
      if (r?.kind === "data") out[i].push(Buffer.from(r.bytes));
    }
  };
  for (let i = 0; i < inputs.length; i++) await deliver(i, encoders[i].open(`vm${i + 1}`));
  for (let at = 0; inputs.some((b) => at < b.length); at += chunk)
    for (let i = 0; i < inputs.length; i++)
      if (at < inputs[i].length) await deliver(i, encoders[i].encode(inputs[i].subarray(at, at + chunk)));
  for (let i = 0; i < inputs.length; i++) await deliver(i, encoders[i].end());
  return { enc: pages, dec, events, out: out.map((parts) => Buffer.concat(parts)) };
}

test("two real streams on one dialog rebuild byte for byte; the group's shared pages go as references", async () => {
  const inputs = [streams.get("vm1") as Buffer, streams.get("vm2") as Buffer];
  const { enc, dec, out } = await roundTrip(inputs, 65_536);
  expect(out[0].equals(inputs[0])).toBe(true);
  expect(out[1].equals(inputs[1])).toBe(true);
  const total = inputs[0].length + inputs[1].length;
  expect(enc.stats.bytesIn).toBe(total);
  expect(enc.stats.hits).toBeGreaterThan(1000);
  expect(dec.stats.hits).toBe(enc.stats.hits);
  expect(enc.stats.bytesOut).toBeLessThan(total * 0.8);
  // the splitter understood the ram section to its end: device state is all that passed through
  const s = new RamStreamSplitter();
  s.push(inputs[0]);
  expect(s.fallback).toMatch(/^device state/);
  expect(s.pages).toBeGreaterThan(1000);
});

test("odd chunk sizes and a tiny index cap still rebuild exactly", async () => {
  const inputs = [streams.get("vm1") as Buffer, streams.get("vm2") as Buffer];
  const { enc, out } = await roundTrip(inputs, 4093, 500);
  expect(out[0].equals(inputs[0]) && out[1].equals(inputs[1])).toBe(true);
  expect(enc.stats.stored).toBe(500);
});

test("a garbled or cut stream passes through unchanged", async () => {
  const real = streams.get("vm1") as Buffer;
  const garbled = Buffer.from(real);
  crypto.randomFillSync(garbled, 200_000, 64); // inside the ram records
  const cut = real.subarray(0, 1_000_003);
  const { out, events } = await roundTrip([garbled, cut], 10_000);
  expect(out[0].equals(garbled)).toBe(true);
  expect(out[1].equals(cut)).toBe(true);
  expect(events.filter((e) => e.kind === "fail")).toEqual([]);
});

test("a forged reference fails that stream only; a reference waits for its page from another stream", async () => {
  const real = streams.get("vm1") as Buffer;
  const dec = new DedupRebuilder(1000, 100);
  const page = Buffer.alloc(PAGE_SIZE, 7);
  const digest = crypto.createHash("sha256").update(page).digest();
  expect(await dec.apply(0, { type: FRAME.open, body: Buffer.from("a") })).toMatchObject({ kind: "open", vm: "a" });
  const early = dec.apply(1, { type: FRAME.ref, body: digest }); // its page is still on stream 0's way
  expect(await dec.apply(0, { type: FRAME.store, body: page })).toMatchObject({ kind: "data", bytes: page });
  expect(await early).toMatchObject({ kind: "data", bytes: page });
  const forged = crypto.createHash("sha256").update("not a page we have").digest();
  const t0 = Date.now();
  expect(await dec.apply(0, { type: FRAME.ref, body: forged })).toMatchObject({ kind: "fail", error: { status: 502 } });
  expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
  expect(await dec.apply(0, { type: FRAME.data, body: real.subarray(0, 10) })).toBeUndefined();
  expect(await dec.apply(1, { type: FRAME.ref, body: digest })).toMatchObject({ kind: "data", bytes: page });
  expect(dec.stats).toMatchObject({ stored: 1, hits: 2 });
  expect(() => new FrameReader().push(Buffer.from([99]))).toThrow(/frame type 99/);
  expect(frame(FRAME.end)).toEqual(Buffer.from([FRAME.end]));
});

/** A unix socket that collects what it is sent, like an incoming QEMU, and answers on its return path. */
async function fakeIncoming(file: string, expected: number, reply: Buffer) {
  const got: Buffer[] = [];
  let size = 0;
  const closed = new Promise<Buffer>((resolve) => {
    const server = net.createServer((s) => {
      s.on("data", (b: Buffer) => {
        got.push(b);
        size += b.length;
        if (size === expected) s.end(reply); // QEMU: SHUT on the return path once loaded, then it closes
      });
      s.on("close", () => (server.close(), resolve(Buffer.concat(got))));
    });
    server.listen(file);
  });
  await new Promise((r) => setTimeout(r, 50));
  return closed;
}

test("TLS-PSK relays: a stream arrives whole, its return path flows back, strangers get nothing in", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-dd-"));
  const real = streams.get("vm1") as Buffer;
  const refused: string[] = [];
  const incoming = path.join(dir, "in.sock");
  const arrived = fakeIncoming(incoming, real.length, Buffer.from("rp"));
  const index = new DedupRebuilder(1 << 20);
  const dest = await listenDestinationRelay({
    vm: "vm1",
    index,
    address: "127.0.0.1",
    port: 0,
    secret: "s",
    incoming,
    onRefused: (w) => refused.push(w),
  });
  try {
    // a stranger with the wrong secret is refused, and the relay still takes the right one
    const wrong = await startSourceRelay({
      vm: "vm1",
      pages: new SentPages(10),
      host: "127.0.0.1",
      port: dest.port,
      secret: "guess",
      dir: path.join(dir, "w"),
    });
    const w = net.connect(wrong.uri.slice(5));
    w.write(real.subarray(0, 100_000));
    await expect(wrong.done).rejects.toMatchObject({ status: 503 });
    w.destroy();
    await wrong.close();
    expect(refused.length).toBe(1);
    const pages = new SentPages(1 << 20);
    const src = await startSourceRelay({
      vm: "vm1",
      pages,
      host: "127.0.0.1",
      port: dest.port,
      secret: "s",
      dir: path.join(dir, "r"),
    });
    const back: Buffer[] = [];
    const qemu = net.connect(src.uri.slice(5), () => qemu.write(real));
    qemu.on("data", (b: Buffer) => (back.push(b), qemu.end())); // the source quits once told
    const answered = new Promise((resolve) => qemu.on("close", resolve));
    expect((await arrived).equals(real)).toBe(true);
    await answered;
    await src.done;
    await dest.done;
    expect(Buffer.concat(back).toString()).toBe("rp");
    expect(pages.stats.hits).toBeGreaterThan(100); // pages within the one VM repeat too
    expect(index.stats.hits).toBe(pages.stats.hits);
    await src.close();
  } finally {
    await dest.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
