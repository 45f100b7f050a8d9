/**
 * The source agent (UAC): offers a group of local VMs to a destination, and once every
 * listener is armed (200 OK) migrates them by the plan, reporting progress in-dialog (INFO)
 * and closing with BYE. Used by the CLI (`sip-teleport migrate`, all at once) and the console
 * (Call, Migrate and Bye as separate steps, through `call()` and its SourceCall).
 */
import { randomBytes } from "node:crypto";
import { AnswerHosts, calledAddresses } from "../../lib/access/answer-hosts";
import { answerProof, sourceInDialogRefusal } from "../../lib/access/source-in-dialog";
import { DEFAULT_ANSWER_TIMEOUT_S } from "../../lib/config/schema";
import { TeleportError } from "../../lib/errors";
import type { Logger } from "../../lib/log/logger";
import { answeredReduction, offerCompress, withoutCompress } from "../../lib/plan/compress";
import {
  answeredDedup,
  answeredDedupLink,
  asksGroupCommit,
  DEDUP_INDEX_PAGES,
  offerDedup,
  withAskedCommit,
  withoutDedup,
} from "../../lib/plan/dedup";
import { planOffer } from "../../lib/plan/waves";
import { refusesAttribute } from "./older-peer";
import type { Dialog, SipBody } from "../../lib/sip/backend";
import { diskSpecOf, isCopied } from "../../lib/hypervisor/qemu-disks";
import { formatViolation, nrdlDocument, parseNrdl } from "../../nrdl";
import type { Answer, DiskSpec, Offer, VmSpec } from "../../nrdl/types";
import { nrdlBody, SourceCall } from "./call";
import { dryRun, type DryRun } from "./dry-run";
import { GroupJournal } from "./group-journal";
import { askDecision, groupDecisionOf, returnedOf, settleCopy } from "./source-group";

// The types live in types.ts so that call.ts can use them without importing this file back.
export type { MigrateRequest, MigrateSummary, SourceEvents, SourceOptions, SourcePhase, VmSummary } from "./types";
import type { MigrateRequest, MigrateSummary, SourceEvents, SourceOptions } from "./types";

export class SourceAgent {
  private readonly log: Logger;

  constructor(private readonly opts: SourceOptions) {
    this.log = opts.logger.child({ agent: "source" });
  }

  /**
   * After a crash: groups stopped under group commit are settled by the destination's decision
   * (nrdl/SPEC.md 5.6); then the paused copies of VMs whose migration completed without their
   * agent are quit (the destination runs them).
   */
  async recover(): Promise<void> {
    const pending = new Set<string>();
    if (this.opts.stateDir) {
      for (const vm of await settleStoppedGroups(this.opts, new GroupJournal(this.opts.stateDir), this.log))
        pending.add(vm);
    }
    for (const def of this.opts.host.inventory()) {
      if (pending.has(def.name)) continue; // stopped for a group that is not decided: never touched

      const driver = this.opts.host.find(def.name)?.driver;
      const done = await driver?.settleOrphanedMigration?.(def.name).catch((err: unknown) => {
        this.log.warn("recovery: could not check a VM", { vm: def.name, error: TeleportError.from(err).message });
        return undefined;
      });
      if (done) this.log.info(`recovered: ${done}`, { vm: def.name });
    }
  }

  /** The offer for `req`, checked against the local inventory: every VM defined and running here. */
  async buildOffer(req: MigrateRequest): Promise<Offer> {
    let offer: Offer;
    if (req.plan) {
      offer = { ...req.plan, destinationUri: req.to };
    } else {
      if (!req.vms?.length || !req.policy)
        throw new TeleportError(400, "nothing to migrate", ["name at least one VM, or give a plan file"]);
      const vms: VmSpec[] = req.vms.map((name) => {
        const local = this.opts.host.find(name);
        if (!local) throw new TeleportError(404, "unknown VM", [`${name} is not in this host's inventory`]);
        const { def } = local;
        return {
          name,
          hypervisor: def.hypervisor,
          role: def.role,
          memoryMib: def.memoryMib,
          cpus: def.cpus,
          dependsOn: [],
          disks: [],
        };
      });
      offer = { kind: "offer", sourceUri: this.opts.sip.aor, destinationUri: req.to, policy: req.policy, vms };
    }
    // asked of every VM at once: each is one or two monitor round trips to a busy QEMU
    const found = await Promise.all(
      offer.vms.map(async (vm): Promise<string | undefined> => {
        const local = this.opts.host.find(vm.name);
        if (!local) return `${vm.name} is not in this host's inventory`;
        const state = await local.driver.state(vm.name);
        return state === "running" ? undefined : `${vm.name} is ${state} here, not running`;
      }),
    );
    const problems = found.filter((p): p is string => p !== undefined);
    if (problems.length) throw new TeleportError(409, "cannot migrate", problems);
    planOffer(offer); // refuses cycles before anything goes on the wire
    return this.withDedup(this.withCompress(await this.withDisks(offer), req), req);
  }

  /**
   * Group page dedup to offer (nrdl/SPEC.md 5.8), only with the group commit the call asks for: a
   * plan file's own `dedup` stands, "on" checked as `--dedup on` is (a move this host cannot dedup
   * would fail only once its stream went to a relay); else the request's choice, else the host's
   * default (config `defaults.dedup`), else "auto" (on when capped).
   */
  private withDedup(offer: Offer, req: MigrateRequest): Offer {
    const planned = offer.policy.dedup;
    const drivers = offer.vms.map((vm) => this.opts.host.find(vm.name)?.driver.dedup);
    const dedup = offerDedup(
      planned ?? req.dedup ?? this.opts.dedup ?? "auto",
      offer.policy,
      asksGroupCommit(offer.policy, this.opts.stateDir),
      drivers,
      this.opts.dedupIndexPages ?? DEDUP_INDEX_PAGES,
    );
    if (planned !== undefined || dedup === undefined) return offer;
    // this source's relays can deflate their links: the destination chooses (SPEC.md 5.8)
    return { ...offer, policy: { ...offer.policy, dedup, dedupLink: "deflate" } };
  }

  /**
   * The stream reductions to offer (nrdl/SPEC.md 5.7): a plan file's own `compress` stands; else
   * the request's choice, else the host's default (config `defaults.compress`), else "auto" (what
   * every VM's driver here can do, when capped).
   */
  private withCompress(offer: Offer, req: MigrateRequest): Offer {
    if (offer.policy.compress !== undefined) return offer;
    const drivers = offer.vms.map((vm) => this.opts.host.find(vm.name)?.driver.compression);
    const compress = offerCompress(req.compress ?? this.opts.compress ?? "auto", offer.policy, drivers);
    return compress === undefined ? offer : { ...offer, policy: { ...offer.policy, compress } };
  }

  /**
   * The disks each VM's inventory defines, as the offer must say them. Only when some disk is to be
   * copied: an offer without one stays NRDL 1, which any destination reads (shared disks need nothing).
   */
  private async withDisks(offer: Offer): Promise<Offer> {
    const defs = offer.vms.map((vm) => this.opts.host.find(vm.name)?.def.disks ?? []);
    if (!defs.some((disks) => disks.some(isCopied)))
      return { ...offer, vms: offer.vms.map((v) => ({ ...v, disks: [] })) };
    const vms = await Promise.all(
      offer.vms.map(async (vm, i): Promise<VmSpec> => {
        const disks: DiskSpec[] = [];
        for (const d of defs[i]) {
          try {
            disks.push(await diskSpecOf(d));
          } catch (err) {
            throw new TeleportError(409, "cannot migrate", [`${vm.name}: ${TeleportError.from(err).message}`]);
          }
        }
        return { ...vm, disks };
      }),
    );
    return { ...offer, vms };
  }

  /** Ask first: the offer for `req`, checked here and by the destination (OPTIONS), nothing armed or moved. */
  async dryRun(req: MigrateRequest): Promise<DryRun> {
    // as the INVITE would ask: group commit decides what the destination accepts (dedup, SPEC.md 5.8)
    return dryRun(this.opts.sip, req.to, withAskedCommit(await this.buildOffer(req), this.opts.stateDir));
  }

  /** Call, run the plan, hang up: the CLI's one-shot migration. `req.signal` cancels or aborts. */
  async migrate(req: MigrateRequest, events: SourceEvents = {}): Promise<MigrateSummary> {
    const call = await this.call(req, events);
    if (!req.signal?.aborted) await call.run(req.signal);
    return call.bye();
  }

  /**
   * Send the INVITE and wait for the destination's answer: the dialog is then open with every
   * listener armed, and the caller decides when to run the plan and when to hang up (the console
   * has a button for each). `req.signal` aborting before the answer sends CANCEL.
   */
  async call(req: MigrateRequest, events: SourceEvents = {}): Promise<SourceCall> {
    const offer = await this.buildOffer(req);
    // Cancelled while the offer was being checked: nothing has gone on the wire yet.
    if (req.signal?.aborted)
      throw new TeleportError(487, "Request Terminated", ["cancelled before the INVITE was sent"]);
    // a switchover is offered for the destination to decide, when this host can journal its half
    const asked = withAskedCommit(offer, this.opts.stateDir);
    const askCommit = asked !== offer;
    const { compress: offered, dedup: offeredDedup } = offer.policy;
    if (asked === offer && offered === undefined && offeredDedup === undefined) return this.dial(req, offer, events);
    try {
      return await this.dial(req, asked, events);
    } catch (err) {
      const e = TeleportError.from(err);
      const commit = askCommit && refusesAttribute(e.status, e.details, "@commit");
      const compress = offered !== undefined && refusesAttribute(e.status, e.details, "@compress");
      // dedup goes only with group commit: without one, without it too
      const dedup = offeredDedup !== undefined && (commit || refusesAttribute(e.status, e.details, "@dedup"));
      if (!commit && !compress && !dedup) throw e;
      // only who decides (5.6) or how the bytes are carried (5.7, 5.8) changes, not what moves (nrdl/SPEC.md 8):
      // ask again the way it understands
      const unknown = [commit && "group commit", compress && "stream compression", dedup && "group page dedup"];
      this.log.warn(`the destination does not speak ${unknown.filter(Boolean).join(" or ")}: asking again without`, {
        to: req.to,
        details: e.details,
      });
      const again = commit ? offer : asked;
      const plainer = compress ? withoutCompress(again) : again;
      return this.dial(req, dedup ? withoutDedup(plainer) : plainer, events);
    }
  }

  private async dial(req: MigrateRequest, offer: Offer, events: SourceEvents): Promise<SourceCall> {
    const migrationId = `mig-${randomBytes(4).toString("hex")}`;
    const log = this.log.child({ migrationId });
    events.onPhase?.("inviting", req.to);
    const t0 = Date.now();
    const answerTimeoutMs = (this.opts.answerTimeoutS ?? DEFAULT_ANSWER_TIMEOUT_S) * 1000;
    const doc = nrdlDocument(migrationId, offer);
    const invite = this.opts.sip.invite(req.to, nrdlBody(doc), {
      answerTimeoutMs,
      redirectAllowed: this.opts.redirectAllowed,
    });
    const onAbort = () => invite.cancel();
    req.signal?.addEventListener("abort", onAbort, { once: true });
    let dialog: Dialog;
    let answer: Answer;
    let hosts: AnswerHosts;
    try {
      const est = await invite.established;
      dialog = est.dialog;
      // the destination's INFO and BYE must come the way this 200 did (access/source-in-dialog.ts)
      const proof = answerProof(est.response);
      dialog.vetRequests((r) => sourceInDialogRefusal(r, proof));
      try {
        hosts = new AnswerHosts({
          called: await calledAddresses(est.target, est.response),
          networks: this.opts.migrationNetworks?.(est.target) ?? [],
        });
        answer = await hosts.pinAnswer(this.answerOf(est.response.body, offer));
      } catch (err) {
        // an answer we cannot use (a listener or an NBD export missing, or on a host we may not send to):
        // hang up, so the destination disarms now
        void est.dialog.bye().catch(() => undefined);
        throw err;
      }
    } catch (err) {
      const e = tooOld(TeleportError.from(err), doc.version);
      log.warn("INVITE failed", { status: e.status, reason: e.reason, details: e.details });
      throw e;
    } finally {
      req.signal?.removeEventListener("abort", onAbort);
    }
    const arming = Date.now() - t0;
    events.onAnswer?.(answer);
    events.onPhase?.("armed", `${answer.armed.length} listeners armed in ${arming} ms`);
    log.info("destination armed", { vms: answer.armed.map((a) => a.vm), ms: arming });
    return new SourceCall(
      { ...this.opts, logger: log },
      { migrationId, version: doc.version, offer, answer, dialog, hosts, events, answeredAt: t0 + arming, arming },
    );
  }

  /** Check the 200's answer covers every VM of the offer with a listener. */
  private answerOf(body: SipBody | undefined, offer: Offer): Answer {
    if (!body) throw new TeleportError(502, "Bad Gateway", ["the destination's 200 OK carried no NRDL answer"]);
    const parsed = parseNrdl(body.content);
    if (!parsed.ok)
      throw new TeleportError(
        502,
        "Bad Gateway",
        parsed.violations.map((v) => `destination answer ${formatViolation(v)}`),
      );
    if (parsed.doc.body.kind !== "answer")
      throw new TeleportError(502, "Bad Gateway", [`expected an <answer>, got <${parsed.doc.body.kind}>`]);
    const answer = parsed.doc.body;
    const missing = offer.vms.filter((v) => !answer.armed.some((a) => a.vm === v.name)).map((v) => v.name);
    if (missing.length) throw new TeleportError(502, "Bad Gateway", [`no listener armed for ${missing.join(", ")}`]);
    const noExport = offer.vms.flatMap((v) =>
      v.disks
        .filter(
          (d) => isCopied(d) && !answer.armed.find((a) => a.vm === v.name)?.exports.some((e) => e.disk === d.target),
        )
        .map((d) => `${v.name}: no NBD export armed for disk ${d.target}`),
    );
    if (noExport.length) throw new TeleportError(502, "Bad Gateway", noExport);
    const badReduction = answer.armed.flatMap(
      (a) => answeredReduction(offer, a, this.opts.host.find(a.vm)?.driver.compression) ?? [],
    );
    badReduction.push(
      ...answer.armed.flatMap((a) => answeredDedup(offer, answer, a, this.opts.host.find(a.vm)?.driver.dedup) ?? []),
      ...(answeredDedupLink(offer, answer) ?? []),
    );
    if (badReduction.length) throw new TeleportError(502, "Bad Gateway", badReduction);
    return answer;
  }
}

/**
 * The groups a killed source agent left stopped: ask each destination what it decided and act on
 * it. Returns the VMs of groups still undecided (unreachable destination): they stay as they are.
 */
async function settleStoppedGroups(opts: SourceOptions, journal: GroupJournal, log: Logger): Promise<string[]> {
  const pending: string[] = [];
  for (const g of journal.all()) {
    const d = await askDecision(opts.sip, g.to, g.migrationId, log);
    const decision = d && groupDecisionOf(d);
    if (!decision) {
      log.error("recovery: a stopped group is not decided yet; its VMs stay stopped here", { ...g });
      pending.push(...g.vms);
      continue;
    }
    const returned = returnedOf(d);
    let settled = true;
    for (const vm of g.vms) {
      const driver = opts.host.find(vm)?.driver;
      const state = await driver?.state(vm).catch(() => "absent" as const);
      if (!driver || state === "absent" || state === "running") continue;
      try {
        await settleCopy(driver, vm, decision.outcome === "commit" && !returned.has(vm));
      } catch (err) {
        settled = false;
        log.error("recovery: could not settle a VM", { vm, error: TeleportError.from(err).message });
      }
    }
    log.warn(`recovered: group ${g.migrationId} was decided ${decision.outcome} at the destination`, { vms: g.vms });
    if (settled) journal.remove(g.migrationId);
    else pending.push(...g.vms);
  }
  return pending;
}

/** A destination that does not speak the offer's version: say so plainly, and what to do. */
function tooOld(e: TeleportError, version: number): TeleportError {
  if (e.status !== 400 || !e.details.some((d) => d.includes(`unsupported version ${version}`))) return e;
  return new TeleportError(400, "unsupported version", [
    `the destination does not speak NRDL version ${version}, which this offer needs: ` +
      "moving VMs whose disks are copied (mode copy or copy-top) needs sip-teleport with NRDL 2 at the destination",
    "upgrade sip-teleport at the destination, or put the disks on storage both hosts see (mode shared)",
    ...e.details.map((d) => `destination said: ${d}`),
  ]);
}
