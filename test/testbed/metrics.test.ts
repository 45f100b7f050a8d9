import { groupFigures, interruptionsByPause, longestGapMs, outages, udpBuckets, zeroBandwidthMs } from "./metrics";
import { parsePingLine, pingLost, type ProbeRecord } from "./probes";
import { niceMax, timelineSvg } from "./svg";

function rec(over: Partial<ProbeRecord>): ProbeRecord {
  return {
    name: "p",
    kind: "ping",
    target: "10.0.0.1",
    intervalMs: 5,
    startedAt: 0,
    stoppedAt: 1000,
    replies: [],
    ...over,
  };
}

/** Replies every `step` ms in [from, to). */
function every(from: number, to: number, step: number): number[] {
  const out: number[] = [];
  for (let t = from; t < to; t += step) out.push(t);
  return out;
}

describe("ping parsing", () => {
  it("reads the -D timestamp and the sequence number", () => {
    expect(parsePingLine("[1700000000.123456] 64 bytes from 10.10.0.11: icmp_seq=42 ttl=64 time=0.31 ms")).toEqual({
      t: 1700000000123.456,
      seq: 42,
    });
    expect(parsePingLine("PING 10.10.0.11 (10.10.0.11) 56(84) bytes of data.")).toBeUndefined();
  });

  it("counts sequence numbers missing between the first and the last reply", () => {
    expect(pingLost([1, 2, 3, 7, 8])).toBe(3);
    expect(pingLost([5, 6, 6, 7])).toBe(0);
    expect(pingLost([])).toBe(0);
  });
});

describe("probe figures", () => {
  it("finds the silence of a probe and its longest gap", () => {
    const r = rec({ replies: [...every(0, 400, 5), ...every(650, 1000, 5)] });
    expect(outages(r)).toEqual([{ probe: "p", from: 395, to: 650, open: false }]);
    expect(longestGapMs(r)).toBe(255);
  });

  it("reports a probe that never answered again as open", () => {
    const r = rec({ replies: every(0, 500, 5) });
    expect(outages(r)).toEqual([{ probe: "p", from: 495, to: 1000, open: true }]);
  });

  it("ignores jitter below ten intervals", () => {
    expect(outages(rec({ replies: [...every(0, 400, 5), ...every(440, 1000, 5)] }))).toEqual([]);
  });

  it("buckets the UDP stream and measures its longest empty stretch after it started", () => {
    const replies = [...every(0, 300, 10), ...every(700, 1000, 10)];
    const r = rec({ kind: "udp", replies, bytes: replies.map(() => 100) });
    const b = udpBuckets(r);
    expect(b).toHaveLength(10);
    expect(b.slice(0, 3)).toEqual([1000, 1000, 1000]);
    expect(b.slice(3, 7)).toEqual([0, 0, 0, 0]);
    expect(zeroBandwidthMs(b)).toBe(400);
    expect(zeroBandwidthMs([0, 0, 5, 5])).toBe(0);
  });

  it("merges overlapping silences of different probes into one group interruption", () => {
    const a = rec({ name: "a", replies: [...every(0, 200, 5), ...every(300, 1000, 5)] });
    const b = rec({ name: "b", replies: [...every(0, 250, 5), ...every(400, 1000, 5)] });
    const c = rec({ name: "c", replies: [...every(0, 600, 5), ...every(700, 1000, 5)] });
    const g = groupFigures([a, b, c]);
    expect(g.interruptions).toEqual([
      { from: 195, to: 400 },
      { from: 595, to: 700 },
    ]);
    expect(g.interruptionMs).toBe(205);
    expect(g.anyDownMs).toBe(205 + 105);
    expect(g.unrecovered).toBe(false);
    expect(groupFigures([a, b, c], 500).interruptions).toEqual([{ from: 595, to: 700 }]);
    expect(groupFigures([rec({ replies: every(0, 1000, 5) })]).interruptionMs).toBe(0);
  });
});

describe("timeline SVG", () => {
  it("rounds axis maxima", () => {
    expect(niceMax(0)).toBe(1);
    expect(niceMax(730)).toBe(1000);
    expect(niceMax(1.3)).toBe(2);
    expect(niceMax(45)).toBe(50);
  });

  it("draws every panel, probe row and VM mark", () => {
    const svg = timelineSvg({
      title: "exp2 <parallel>",
      from: 0,
      to: 3000,
      link: [
        { t: 100, mbit: 0 },
        { t: 200, mbit: 900 },
      ],
      udp: { startedAt: 0, bucketMs: 100, bytes: [1000, 0, 1000] },
      probes: [{ name: "ping router1", outages: [{ from: 1000, to: 1200 }] }],
      vms: [{ name: "router1", start: 500, switchover: 1000, end: 1100 }],
    });
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg).toContain("exp2 &lt;parallel&gt;");
    expect(svg).toContain("1000 Mbit/s");
    expect(svg).toContain("ping router1");
    expect(svg.match(/<title>router1 /g)).toHaveLength(3);
    expect(svg.match(/fill="#d62728"/g)).toHaveLength(1);
  });
});

describe("interruptions by pause", () => {
  it("splits the longest interruption overlapping a VM's pause from the longest elsewhere in the move", () => {
    const interruptions = [
      { from: 100, to: 900 }, // pre-copy starvation, the longest of all
      { from: 1990, to: 2200 }, // starts 10 ms before the first STOP
      { from: 2500, to: 2560 },
    ];
    const pauses = [
      { from: 2000, to: 2080 },
      { from: 2005, to: 2090 },
    ];
    expect(interruptionsByPause(interruptions, pauses)).toEqual({ atPauseMs: 210, elsewhereMs: 800 });
    expect(interruptionsByPause(interruptions.slice(1), [])).toEqual({ atPauseMs: 0, elsewhereMs: 210 });
    // touching counts as overlapping: an interruption that ends exactly at the STOP belongs to it
    expect(interruptionsByPause([{ from: 1900, to: 2000 }], pauses)).toEqual({ atPauseMs: 100, elsewhereMs: 0 });
  });
});
