/**
 * A SIP ladder diagram of one dialog, drawn from trace events: what the operator reads to see
 * which side said what, and when. Text for terminals; the console draws its own SVG from the
 * same events (`ladderSteps`).
 */
import type { TraceEvent } from "./backend";

export type { TraceEvent };

export interface LadderStep {
  /** left-to-right when the left party (us) sent it */
  rightward: boolean;
  label: string;
  at: number;
  callId?: string;
}

const NRDL_KINDS = ["offer", "answer", "status", "report"] as const;

/** The label for a message: "INVITE [offer]", "200 OK (INVITE) [answer]", "INFO [status: router1 migrating 42%]". */
export function describeMessage(message: string): { label: string; callId?: string } {
  const firstLine = message.split(/\r?\n/, 1)[0] ?? "";
  const header = (name: string) => new RegExp(`^(?:${name}):\\s*(.*)$`, "im").exec(message)?.[1]?.trim();
  const callId = header("Call-ID|i");
  const cseqMethod = header("CSeq")?.split(/\s+/)[1];
  const body = message
    .split(/\r?\n\r?\n/)
    .slice(1)
    .join("\n\n");
  const kind = NRDL_KINDS.find((k) => new RegExp(`<${k}[\\s>/]`).test(body));
  let detail = kind ?? "";
  if (kind === "status") {
    const items = [
      ...body.matchAll(/<status\b[^>]*\bvm="([^"]+)"[^>]*\bstate="([^"]+)"(?:[^>]*\bprogress="([^"]+)")?/g),
    ];
    detail =
      `status: ` +
      `${items.map((m) => `${m[1]} ${m[2]}${m[3] ? ` ${Math.round(Number(m[3]) * 100)}%` : ""}`).join(", ")}`;
  }
  const suffix = detail ? ` [${detail}]` : "";
  const response = /^SIP\/2\.0\s+(\d{3})\s*(.*)$/.exec(firstLine);
  if (response)
    return { label: `${response[1]} ${response[2]}${cseqMethod ? ` (${cseqMethod})` : ""}${suffix}`, callId };
  return { label: `${firstLine.split(" ")[0]}${suffix}`, callId };
}

export function ladderSteps(events: readonly TraceEvent[], callId?: string): LadderStep[] {
  return events
    .map((e) => ({ ...describeMessage(e.message), rightward: e.direction === "sent", at: e.at }))
    .filter((s) => !callId || s.callId === callId);
}

/** Draw the ladder as text, `left` being the party whose trace this is. */
export function renderLadder(steps: readonly LadderStep[], left: string, right: string, width = 56): string {
  if (steps.length === 0) return "(no SIP messages)\n";
  const t0 = steps[0].at;
  const lines = [`${"".padStart(9)}${left.padEnd(width + 2)}${right}`];
  for (const s of steps) {
    const label = s.label.length > width - 8 ? s.label.slice(0, width - 11) + "..." : s.label;
    const dashes = width - label.length - 2;
    const l = Math.floor(dashes / 2);
    const r = dashes - l;
    const arrow = s.rightward
      ? `|${"-".repeat(l)} ${label} ${"-".repeat(r - 1)}>|`
      : `|<${"-".repeat(l - 1)} ${label} ${"-".repeat(r)}|`;
    lines.push(`${((s.at - t0) / 1000).toFixed(3).padStart(7)}s ${arrow}`);
  }
  return lines.join("\n") + "\n";
}
