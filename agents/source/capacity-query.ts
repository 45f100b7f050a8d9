/** Ask destinations what they can receive (OPTIONS, Accept: application/nrdl+xml; nrdl/SPEC.md 5.2b). */
import type { SipBackend } from "../../lib/sip/backend";
import { formatViolation, parseNrdl } from "../../nrdl";
import type { Capacity } from "../../nrdl/types";
import { tableLines } from "./table";

export interface DestinationAnswer {
  uri: string;
  /** SIP status of the answer (408 when none came). */
  status: number;
  reason: string;
  /** Round trip of the query, ms. */
  rttMs: number;
  capacity?: Capacity;
  /** Why there is no capacity: the refusal's Warning, or what was wrong with the body. */
  problem?: string;
}

export async function askCapacity(sip: SipBackend, uri: string): Promise<DestinationAnswer> {
  const t0 = Date.now();
  const res = await sip.query(uri);
  const base = { uri, status: res.status, reason: res.reason, rttMs: Date.now() - t0 };
  if (res.status < 200 || res.status >= 300) return { ...base, problem: res.header("Warning") ?? res.reason };
  if (!res.body) return { ...base, problem: "no NRDL <capacity> in the answer (not a sip-teleport >= 0.2 agent?)" };
  const parsed = parseNrdl(res.body.content);
  if (!parsed.ok) return { ...base, problem: parsed.violations.map(formatViolation).join("; ") };
  if (parsed.doc.body.kind !== "capacity")
    return { ...base, problem: `expected <capacity>, got <${parsed.doc.body.kind}>` };
  return { ...base, capacity: parsed.doc.body };
}

/** One row per destination: what it can take, or why it did not say. */
export function renderDestinations(answers: DestinationAnswer[]): string {
  const head = [
    "destination",
    "answer",
    "host",
    "memory free",
    "disk free",
    "ports",
    "receivable",
    "hypervisors",
    "NRDL",
  ];
  const rows = answers.map((a) => {
    const c = a.capacity;
    const status = `${a.status} ${a.reason} (${a.rttMs} ms)`;
    if (!c) return [a.uri, status, "-", "-", "-", "-", "-", "-", "-"];
    return [
      a.uri,
      status,
      c.host,
      `${c.memoryFreeMib} MiB`,
      `${c.diskFreeMib} MiB`,
      String(c.portsFree),
      String(c.vmsReceivable),
      c.hypervisors || "none",
      c.versions,
    ];
  });
  const t = tableLines(head, rows);
  const problems = answers.filter((a) => a.problem).map((a) => `${a.uri}: ${a.problem}`);
  return [t.head, ...t.rows, ...(problems.length ? ["", ...problems] : [])].join("\n") + "\n";
}
