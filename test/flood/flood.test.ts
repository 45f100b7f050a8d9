/**
 * A short flood (bench:flood at small rates): one real exp2 move (router1, video) into a destination
 * that a stranger, wrong digests, garbage UDP and idle TCP connections hit at the same time. The move
 * completes, a second legitimate dialog gets its 200, the flooders get refusals, the destination's
 * memory stays bounded and nothing stays armed.
 */
import { ensureBuilt } from "../e2e/cli-process";
import { floodedMove, type FloodReport } from "../../bench/lib/flood-run";

describe("flood", () => {
  let report: FloodReport;
  beforeAll(async () => {
    ensureBuilt(); // the destination runs as its own process from dist/
    report = await floodedMove(
      { seconds: 15, strangerPerS: 100, wrongDigestPerS: 30, garbagePerS: 200, idleConnections: 200, probesPerS: 2 },
      { quiet: false },
    );
  }, 150_000);

  it("the real move completes and every VM runs on the destination only", () => {
    expect(report.flooded.outcome).toBe("completed");
    expect(report.placement).toEqual({ router1: ["dc2"], video: ["dc2"] });
  });

  it("second, legitimate dialogs started during the flood are answered 200", () => {
    expect(report.flooded.probes.started).toBeGreaterThan(0);
    expect(report.flooded.probes.answered).toBeGreaterThan(0);
    expect(Number.isFinite(report.flooded.probes.p99Ms)).toBe(true);
  });

  it("the stranger and the wrong digests get refusals (403, 401, 503 with Retry-After)", () => {
    expect(report.stranger.successful).toBeGreaterThan(0);
    expect(report.wrongDigest.successful).toBeGreaterThan(0);
    expect(report.garbageSent).toBeGreaterThan(0);
  });

  it("memory stays bounded and nothing is left armed once the agent's timers ran", () => {
    expect(report.rssMiB.duringMax - report.rssMiB.before).toBeLessThan(200);
    expect(report.rssMiB.after - report.rssMiB.before).toBeLessThan(200);
    expect(report.leftArmed).toBe(0);
    expect(report.journal).toBe(0);
  });
});
