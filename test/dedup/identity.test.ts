/**
 * Group page dedup on real QEMU 7.2 streams: two test guests' streams, encoded on one dialog and
 * rebuilt, come out byte for byte as QEMU wrote them, with references for the pages the second VM
 * shares with the first; a cut or garbled stream passes through unchanged; a forged reference
 * fails that stream only.
 */
import crypto from "node:crypto";
import { DedupEncoder } from "../../lib/dedup/encoder";
import { FRAME, frame, FrameReader } from "../../lib/dedup/frames";
import { PAGE_SIZE, RamStreamSplitter } from "../../lib/dedup/ram-stream";
import { DedupRebuilder, type Rebuilt } from "../../lib/dedup/rebuild";
import { captureStreams } from "./capture";

jest.setTimeout(60_000);

let streams: Map<string, Buffer>;

beforeAll(async () => {
  streams = await captureStreams(["vm1", "vm2"], 4000);
});

/** Feeds each stream in chunks of `chunk` bytes (interleaved), as sockets would. */
function roundTrip(inputs: Buffer[], chunk: number, cap = 1 << 20) {
  const enc = new DedupEncoder(cap);
  const dec = new DedupRebuilder(cap);
  const reader = new FrameReader();
  const out = inputs.map(() => [] as Buffer[]);
  const events: Rebuilt[] = [];
  const deliver = (bytes: Buffer) => {
    for (const f of reader.push(bytes)) {
      const r = dec.apply(f);
      if (r) events.push(r);
      if (r?.kind === "data") out[r.stream].push(Buffer.from(r.bytes));
    }
  };
  inputs.forEach((_, i) => deliver(enc.open(i, `vm${i + 1}`)));
  for (let at = 0; inputs.some((b) => at < b.length); at += chunk) {
    inputs.forEach((b, i) => at < b.length && deliver(enc.encode(i, b.subarray(at, at + chunk))));
  }
  inputs.forEach((_, i) => deliver(enc.end(i)));
  return { enc, dec, events, out: out.map((parts) => Buffer.concat(parts)) };
}

test("two real streams on one dialog rebuild byte for byte; the group's shared pages go as references", () => {
  const inputs = [streams.get("vm1") as Buffer, streams.get("vm2") as Buffer];
  const { enc, dec, out } = roundTrip(inputs, 65_536);
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

test("odd chunk sizes and a tiny index cap still rebuild exactly", () => {
  const inputs = [streams.get("vm1") as Buffer, streams.get("vm2") as Buffer];
  const { enc, out } = roundTrip(inputs, 4093, 500);
  expect(out[0].equals(inputs[0]) && out[1].equals(inputs[1])).toBe(true);
  expect(enc.stats.stored).toBe(500);
});

test("a garbled or cut stream passes through unchanged", () => {
  const real = streams.get("vm1") as Buffer;
  const garbled = Buffer.from(real);
  crypto.randomFillSync(garbled, 200_000, 64); // inside the ram records
  const cut = real.subarray(0, 1_000_003);
  const { out, events } = roundTrip([garbled, cut], 10_000);
  expect(out[0].equals(garbled)).toBe(true);
  expect(out[1].equals(cut)).toBe(true);
  expect(events.filter((e) => e.kind === "fail")).toEqual([]);
});

test("a forged or unknown reference fails that stream only; the other one rebuilds", () => {
  const real = streams.get("vm1") as Buffer;
  const dec = new DedupRebuilder(1000);
  const page = Buffer.alloc(PAGE_SIZE, 7);
  expect(dec.apply({ type: FRAME.open, stream: 0, body: Buffer.from("a") })?.kind).toBe("open");
  expect(dec.apply({ type: FRAME.open, stream: 1, body: Buffer.from("b") })?.kind).toBe("open");
  expect(dec.apply({ type: FRAME.store, stream: 1, body: page })?.kind).toBe("data");
  const forged = crypto.createHash("sha256").update("not a page we have").digest();
  const failed = dec.apply({ type: FRAME.ref, stream: 0, body: forged });
  expect(failed).toMatchObject({ kind: "fail", stream: 0, error: { status: 502 } });
  expect(dec.apply({ type: FRAME.data, stream: 0, body: real.subarray(0, 10) })).toBeUndefined();
  const digest = crypto.createHash("sha256").update(page).digest();
  expect(dec.apply({ type: FRAME.ref, stream: 1, body: digest })).toMatchObject({ kind: "data", bytes: page });
  expect(() => new FrameReader().push(frame(FRAME.end, 0).fill(99, 0, 1))).toThrow(/frame type 99/);
});
