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
import { formatViolation, nrdlDocument, parseNrdl } from "../../nrdl";
import { offeredMethods, withoutCompress } from "../../lib/plan/compress";
import { withoutDedup } from "../../lib/plan/dedup";
import { refusesAttribute } from "./older-peer";
import type { CompressMethod, Offer, Preview } from "../../nrdl/types";
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
  // the lowest version that says it all: a v1 destination still reads an offer without v2 vocabulary
  let res = await sip.query(to, nrdlBody(nrdlDocument(id, offer)));
  // a destination from before group commit, stream compression or dedup refuses the attribute: ask as the
  // INVITE would (SPEC.md 8), without dedup when without commit
  const warning = [res.header("Warning") ?? ""];
  const commit = offer.policy.commit !== undefined && refusesAttribute(res.status, warning, "@commit");
  const compress = offer.policy.compress !== undefined && refusesAttribute(res.status, warning, "@compress");
  const dedup = offer.policy.dedup !== undefined && (commit || refusesAttribute(res.status, warning, "@dedup"));
  if (commit || compress || dedup) {
    if (commit) offer = withoutCommit(offer);
    if (compress) offer = withoutCompress(offer);
    if (dedup) offer = withoutDedup(offer);
    res = await sip.query(to, nrdlBody(nrdlDocument(id, offer)));
  }
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
    estimate: estimatePlan(offer, plan, methodsOf(offer, preview)),
  };
}

/**
 * The reduction each VM would get: what the preview accepted (an older destination's preview has
 * none: plain), else, without a preview, the offer's first method.
 */
function methodsOf(offer: Offer, preview: Preview | undefined): Map<string, CompressMethod | undefined> {
  if (preview) return new Map(preview.accepted.map((a) => [a.vm, a.compress]));
  const first = offeredMethods(offer.policy)[0];
  return new Map(offer.vms.map((v) => [v.name, first]));
}

/** The offer without `commit` (a destination that predates group commit, SPEC.md 8). */
function withoutCommit(offer: Offer): Offer {
  const { commit: _dropped, ...policy } = offer.policy;
  return { ...offer, policy };
}

/** What the destination said of the offered group page dedup (nrdl/SPEC.md 5.8); the estimates leave it out. */
function dedupLine(preview: Preview | undefined): string {
  const on = (preview?.accepted ?? []).filter((a) => a.dedup === "on").map((a) => a.vm);
  if (on.length === 0) return "group dedup: offered, refused by the destination (plain streams, or compression alone)";
  return `group dedup: negotiated for ${on.join(", ")} (the estimates assume no page is deduplicated)`;
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
  for (const a of d.preview?.accepted ?? [])
    verdict.set(a.vm, `would arm ${a.uri}${a.compress ? ` with ${a.compress}` : ""}`);
  for (const r of d.preview?.rejected ?? []) verdict.set(r.vm, `refused: ${r.reason}`);
  const rows = d.estimate.vms.map((v) => [
    String(v.wave),
    v.vm,
    `${v.memoryMib} MiB`,
    `~${seconds(v.transferS)} s`,
    `<= ${v.downtimeMs} ms`,
    v.compress ? `${v.compress} ~${Math.round(v.linkMib)} MiB` : `plain ~${Math.round(v.linkMib)} MiB`,
    verdict.get(v.vm) ?? (ok ? "accepted" : "-"),
  ]);
  const head = ["wave", "VM", "memory", "transfer", "downtime", "on the link", "destination"];
  const t = tableLines(head, rows);
  lines.push("", t.head, ...t.rows, "");
  lines.push(`estimated total ~${seconds(d.estimate.totalS)} s at ${d.estimate.assumed}`);
  if (d.estimate.vms.some((v) => v.compress))
    lines.push(
      "compressed streams assume 0.39x of the memory on the link (zlib level 1 on the test guests, issue 26; " +
        "zstd alike; xbzrle 1x for one pass); QEMU 7.2 counts a cap before multifd compression, so under a cap " +
        "zstd/zlib save bytes, not time",
    );
  if (p.dedup === "on") lines.push(dedupLine(d.preview));
  if (!ok && d.warning && !d.preview?.rejected.length) lines.push(`refusal: ${d.warning}`);
  return lines.join("\n") + "\n";
}
