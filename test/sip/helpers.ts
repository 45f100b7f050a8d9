/** Shared pieces of the SIP tests: agents on ephemeral loopback ports, a fixed answerer, sipp. */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createSipBackend, type SipConfig, type SipJsBackend, type TransportKind } from "../../lib/sip";
import type { TransportOptions } from "../../lib/sip/transport";

export const NRDL = "application/nrdl+xml";
export const ANSWER = '<nrdl xmlns="urn:sip-teleport:nrdl:1" version="1"><answer><vm name="router1" accepted="true"/></answer></nrdl>';
export const OFFER = '<nrdl xmlns="urn:sip-teleport:nrdl:1" version="1"><offer><vm name="router1" role="router" memory-mib="96"/></offer></nrdl>';
export const FIXTURES = path.join(__dirname, "..", "fixtures");

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `sip-teleport-${prefix}-`));
}

export async function startAgent(
  user: string,
  kinds: TransportKind[],
  extra: Partial<SipConfig> = {},
  overrides: Partial<TransportOptions> = {},
): Promise<SipJsBackend> {
  const host = extra.listen?.[0]?.host ?? "127.0.0.1";
  const backend = createSipBackend(
    { aor: `sip:${user}@${host.includes(":") ? `[${host}]` : host}`, listen: kinds.map((transport) => ({ transport, host, port: 0 })), ...extra },
    overrides,
  );
  await backend.start();
  return backend;
}

/** A destination agent without migration logic: answers every offer with ANSWER and counts what it sees. */
export function answerEverything(backend: SipJsBackend): { infos: number; byes: number; acks: number; invites: number } {
  const seen = { infos: 0, byes: 0, acks: 0, invites: 0 };
  backend.setHandlers({
    onInvite: (_req, res) => {
      seen.invites++;
      const { dialog, acked } = res.accept({ contentType: NRDL, content: ANSWER });
      acked.then(() => seen.acks++, () => undefined);
      dialog.onInfo((_r, reply) => {
        seen.infos++;
        reply.send(200);
      });
      dialog.onBye((_r, reply) => {
        seen.byes++;
        reply.send(200);
      });
    },
  });
  return seen;
}

export interface SippResult {
  code: number | null;
  successful: number;
  failed: number;
  /** Retransmissions sipp sent (its own reliability), from the statistics. */
  retransmissions: number;
  output: string;
}

/** Runs sipp to completion and reads its final statistics (cumulative counters). */
export function runSipp(args: string[], timeoutMs = 60000): Promise<SippResult> {
  const dir = tempDir("sipp");
  const stat = path.join(dir, "stat.csv");
  return new Promise((resolve, reject) => {
    const child = spawn("sipp", [...args, "-trace_stat", "-stf", stat, "-fd", "1", "-nostdin", "-trace_err", "-error_file", path.join(dir, "err.log")], {
      cwd: dir,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output = (output + d.toString()).slice(-20000)));
    child.stderr.on("data", (d: Buffer) => (output = (output + d.toString()).slice(-20000)));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      const lines = fs.existsSync(stat) ? fs.readFileSync(stat, "utf8").trim().split("\n") : [];
      const cols = (lines[0] ?? "").split(";");
      const last = (lines[lines.length - 1] ?? "").split(";");
      const value = (name: string): number => Number(last[cols.indexOf(name)] ?? NaN);
      const errors = fs.existsSync(path.join(dir, "err.log")) ? fs.readFileSync(path.join(dir, "err.log"), "utf8").slice(-3000) : "";
      fs.rmSync(dir, { recursive: true, force: true });
      resolve({
        code,
        successful: value("SuccessfulCall(C)"),
        failed: value("FailedCall(C)"),
        retransmissions: value("Retransmissions(C)"),
        output: output + errors,
      });
    });
  });
}

export function listenerPort(backend: SipJsBackend, kind: TransportKind): number {
  const l = backend.listeners.find((x) => x.transport === kind);
  if (!l) throw new Error(`no ${kind} listener`);
  return l.port;
}
