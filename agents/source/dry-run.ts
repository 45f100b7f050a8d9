/**
 * Ask first: send the offer to the destination in an OPTIONS (nrdl/SPEC.md, "Dry run"), which runs
 * the INVITE's checks and answers what it would arm or refuse, arming nothing. Here nothing runs
 * either: the offer is built and checked as for a migration, and the plan is only described.
 */
import { randomBytes } from "node:crypto";
import { TeleportError } from "../../lib/errors";
import { estimatePlan, type PlanEstimate } from "../../lib/plan/estimate";
import { describePlan, planOffer } from "../../lib/plan/waves";
import type { SipBackend } from "../../lib/sip/backend";
import { formatViolation, parseNrdl } from "../../nrdl";
import type { Offer, Preview } from "../../nrdl/types";
import { nrdlBody } from "./call";
import { tableLines } from "./table";

export interface DryRun {
  to: string;
  offer: Offer;
  /** The destination's status: 200 it would take the offer, else what the INVITE would get. */
  status: number;
  reason: string;
  /** The destination's explanation (its Warning), when it refused. */
  warning?: string;
  preview?: Preview;
  waves: string[];
  estimate: PlanEstimate;
}

export async function dryRun(sip: SipBackend, to: string, offer: Offer): Promise<DryRun> {
  const plan = planOffer(offer);
  const id = `dry-${randomBytes(4).toString("hex")}`;
  const res = await sip.query(to, nrdlBody({ version: 1, id, body: offer }));
  let preview: Preview | undefined;
  if (res.body) {
    const parsed = parseNrdl(res.body.content);
    if (!parsed.ok)
      throw new TeleportError(
        502,
        "Bad Gateway",
        parsed.violations.map((v) => `destination dry-run answer ${formatViolation(v)}`),
      );
    if (parsed.doc.body.kind === "preview") preview = parsed.doc.body;
  }
  if (res.status >= 200 && res.status < 300 && !preview)
    throw new TeleportError(502, "Bad Gateway", [
      `${to} answered the dry run without an NRDL <preview>: it does not support dry runs (sip-teleport >= 0.2)`,
    ]);
  return {
    to,
    offer,
    status: res.status,
    reason: res.reason,
    warning: res.header("Warning"),
    preview,
    waves: describePlan(plan, offer.policy.strategy, offer.policy.maxParallel),
    estimate: estimatePlan(offer, plan),
  };
}

const seconds = (s: number) => (s < 10 ? s.toFixed(1) : Math.round(s).toString());

/** The plan and the destination's verdict, for a terminal. */
export function renderDryRun(d: DryRun): string {
  const p = d.offer.policy;
  const ok = d.status >= 200 && d.status < 300;
  const lines = [
    `dry run: ${d.to} ${ok ? "would accept" : "would refuse"} the offer (${d.status} ${d.reason}); ` +
      "nothing was armed or moved",
    `strategy ${p.strategy}, max parallel ${p.maxParallel}, on error ${p.onError}, ` +
      `downtime limit ${p.downtimeLimitMs} ms`,
    ...d.waves,
  ];
  const verdict = new Map<string, string>();
  for (const a of d.preview?.accepted ?? []) verdict.set(a.vm, `would arm ${a.uri}`);
  for (const r of d.preview?.rejected ?? []) verdict.set(r.vm, `refused: ${r.reason}`);
  const rows = d.estimate.vms.map((v) => [
    String(v.wave),
    v.vm,
    `${v.memoryMib} MiB`,
    `~${seconds(v.transferS)} s`,
    `<= ${v.downtimeMs} ms`,
    verdict.get(v.vm) ?? (ok ? "accepted" : "-"),
  ]);
  const head = ["wave", "VM", "memory", "transfer", "downtime", "destination"];
  const t = tableLines(head, rows);
  lines.push("", t.head, ...t.rows, "");
  lines.push(`estimated total ~${seconds(d.estimate.totalS)} s at ${d.estimate.assumed}`);
  if (!ok && d.warning && !d.preview?.rejected.length) lines.push(`refusal: ${d.warning}`);
  return lines.join("\n") + "\n";
}
