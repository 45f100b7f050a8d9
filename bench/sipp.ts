/**
 * Runs sipp to completion and reads its final cumulative statistics (used by the SIP tests and the
 * benchmarks), and the one sipp load the SIP benchmarks share: the NRDL dialog as a source agent plays it.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface SippResult {
  code: number | null;
  successful: number;
  failed: number;
  /** Retransmissions sipp itself sent. */
  retransmissions: number;
  /** Per-call response times (ms) of the scenario's rtd="true" step, when sipp ran with -trace_rtt -rtt_freq 1. */
  responseTimesMs: number[];
  /** The tail of sipp's output and error log, for failure messages. */
  output: string;
}

/** sipp as a source agent: INVITE with an NRDL offer (one VM router<call number> per call), ACK, INFO, BYE. */
export const NRDL_UAC_SCENARIO = path.resolve(__dirname, "..", "..", "test", "fixtures", "sipp", "nrdl-uac.xml");

/** How long sipp may run for `calls` at `rate` before it gives up (s): three times the nominal time, plus 30. */
function stepTimeoutS(rate: number, calls: number): number {
  return Math.ceil(calls / rate) * 3 + 30;
}

/**
 * One load step against a destination on 127.0.0.1:`port` (UDP): `calls` NRDL dialogs at `rate`
 * calls/s, at most twice the rate at once, with each call's INVITE -> 200 time.
 */
export function runNrdlLoad(port: number, rate: number, calls: number): Promise<SippResult> {
  const timeoutS = stepTimeoutS(rate, calls);
  return runSipp(
    [
      `127.0.0.1:${port}`,
      ...["-sf", NRDL_UAC_SCENARIO, "-s", "dc2", "-t", "u1", "-i", "127.0.0.1"],
      ...["-r", String(rate), "-m", String(calls), "-l", String(Math.max(50, rate * 2))],
      ...["-recv_timeout", "5000", "-timeout", String(timeoutS), "-trace_rtt", "-rtt_freq", "1"],
    ],
    (timeoutS + 30) * 1000,
  );
}

/** The p-th percentile of ascending `sorted` (NaN when empty). */
export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** A random high port: sipp would otherwise bind 5060, which other users of this machine may hold. */
export function randomPort(): number {
  return 20000 + Math.floor(Math.random() * 40000);
}

/** Runs sipp on a random local port (unless `-p` is given), retrying once if that port is taken. */
export async function runSipp(args: string[], timeoutMs = 60000): Promise<SippResult> {
  if (args.includes("-p")) return runSippOnce(args, timeoutMs);
  const first = await runSippOnce([...args, "-p", String(randomPort())], timeoutMs);
  if (!/already in use|bind/i.test(first.output) || first.code === 0) return first;
  return runSippOnce([...args, "-p", String(randomPort())], timeoutMs);
}

function runSippOnce(args: string[], timeoutMs: number): Promise<SippResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sip-teleport-sipp-"));
  const stat = path.join(dir, "stat.csv");
  const errors = path.join(dir, "err.log");
  return new Promise((resolve, reject) => {
    const child = spawn(
      "sipp",
      [...args, "-trace_stat", "-stf", stat, "-fd", "1", "-nostdin", "-trace_err", "-error_file", errors],
      {
        cwd: dir,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let output = "";
    const keep = (d: Buffer): void => void (output = (output + d.toString()).slice(-20000));
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      const lines = fs.existsSync(stat) ? fs.readFileSync(stat, "utf8").trim().split("\n") : [];
      const cols = (lines[0] ?? "").split(";");
      const last = (lines[lines.length - 1] ?? "").split(";");
      const value = (name: string): number => Number(last[cols.indexOf(name)] ?? NaN);
      const errorLog = fs.existsSync(errors) ? fs.readFileSync(errors, "utf8").slice(-3000) : "";
      const responseTimesMs = fs
        .readdirSync(dir)
        .filter((f) => f.endsWith("_rtt.csv"))
        .flatMap((f) => fs.readFileSync(path.join(dir, f), "utf8").trim().split("\n").slice(1))
        .map((line) => Number(line.split(";")[1]))
        .filter((n) => Number.isFinite(n));
      fs.rmSync(dir, { recursive: true, force: true });
      resolve({
        code,
        successful: value("SuccessfulCall(C)"),
        failed: value("FailedCall(C)"),
        retransmissions: value("Retransmissions(C)"),
        responseTimesMs,
        output: output + errorLog,
      });
    });
  });
}
