/**
 * The source's half of group commit (nrdl/SPEC.md 5.6) for one dialog: it tells the destination
 * when the group is stopped (<switchover>) or called off (<abort>), waits for the destination's
 * <decision>, and applies it to its own stopped copies. Once any VM's rest was sent it resumes
 * nothing unless the destination said abort: without a decision it asks (<decision-query>) until
 * one comes, and keeps its VMs stopped and journaled if none does.
 */
import { TeleportError } from "../../lib/errors";
import type { HypervisorDriver } from "../../lib/hypervisor/driver";
import type { Host } from "../../lib/hypervisor/host";
import type { Logger } from "../../lib/log/logger";
import type { GroupCommit, GroupDecision } from "../../lib/plan/execute";
import type { IncomingRequest, Responder, SipBackend } from "../../lib/sip/backend";
import { buildNrdl, parseNrdl } from "../../nrdl";
import type { Decision, NrdlBody } from "../../nrdl/types";
import { NRDL_MIME } from "../../nrdl/types";
import { crashPoint } from "../../lib/plan/crash-point";
import type { GroupJournal } from "./group-journal";
import type { StatusReporter } from "./status-reporter";

/** How long the source waits for the destination's INFO before it starts asking. */
const DECISION_INFO_WAIT_MS = 1000;
const QUERY_INTERVAL_MS = 1000;

/** The decision a response body carries, if it carries one. */
export function decisionIn(content: string | undefined): Decision | undefined {
  const parsed = content ? parseNrdl(content) : undefined;
  return parsed?.ok && parsed.doc.body.kind === "decision" ? parsed.doc.body : undefined;
}

/** Ask a destination, outside any dialog, what it decided for a group; undefined when it did not answer. */
export async function askDecision(
  sip: SipBackend,
  to: string,
  migrationId: string,
  log: Logger,
): Promise<Decision | undefined> {
  const doc = { version: 2, id: migrationId, body: { kind: "decision-query" } as NrdlBody };
  try {
    const res = await sip.query(to, { contentType: NRDL_MIME, content: buildNrdl(doc) });
    const decision = decisionIn(res.body?.content);
    if (!decision) log.warn("the decision query got no <decision>", { to, status: res.status, reason: res.reason });
    return decision;
  } catch (err) {
    log.warn("the decision query failed", { to, migrationId, error: TeleportError.from(err).message });
    return undefined;
  }
}

/** The VMs a commit gives back (their arrived copy died before it ran), from `returned`. */
export function returnedOf(d: Decision): Set<string> {
  return new Set((d.returned ?? "").split(" ").filter(Boolean));
}

/**
 * Apply a decision to this host's stopped copy of `vm`: quit it when the destination runs the VM,
 * else run it here again (abort, or a VM the commit gave back).
 */
export async function settleCopy(driver: HypervisorDriver, vm: string, runsThere: boolean): Promise<void> {
  if (runsThere) return driver.stop(vm);
  if (!driver.resumeHere) throw new TeleportError(501, `the ${driver.kind} driver cannot resume ${vm} here`);
  await driver.resumeHere(vm);
}

export function groupDecisionOf(d: Decision): GroupDecision | undefined {
  if (d.outcome === "commit") return { outcome: "commit" };
  if (d.outcome === "abort") return { outcome: "abort", reason: d.reason ?? "the destination aborted the group" };
  return undefined;
}

export interface SourceGroupOptions {
  migrationId: string;
  version: number;
  to: string;
  vms: readonly string[];
  host: Host;
  sip: SipBackend;
  reporter: StatusReporter;
  journal: GroupJournal;
  log: Logger;
  /** Give up waiting for a decision after this long (the VMs stay stopped and journaled). */
  decisionTimeoutMs: number;
}

export class SourceGroup implements GroupCommit {
  private told: ((d: Decision) => void) | undefined;
  private readonly fromInfo: Promise<Decision>;
  private returned = new Set<string>();
  private readonly unsettled: Set<string>;
  private decidedOnce = false;
  /** When <switchover> was sent and answered (epoch ms): the claim of the group's frames, for the log. */
  private claimed?: { askedAt: number; answeredAt: number };

  constructor(private readonly opts: SourceGroupOptions) {
    this.fromInfo = new Promise((resolve) => (this.told = resolve));
    this.unsettled = new Set(opts.vms);
  }

  /** The dialog's INFO handler: the destination's <decision>. */
  onInfo(req: IncomingRequest, res: Responder): void {
    const decision = decisionIn(req.body?.content);
    if (!decision || decision.outcome === "unknown")
      return res.send(400, "Bad Request", {
        headers: { Warning: '399 sip-teleport "expected an NRDL <decision> of commit or abort"' },
      });
    this.opts.log.info("the destination decided", { outcome: decision.outcome, reason: decision.reason });
    res.send(200, "OK");
    this.told?.(decision);
  }

  /** <switchover>, answered once the destination claimed the group's MACs (at most CLAIM_WAIT_MS). */
  async onStopping(): Promise<void> {
    const asked = Date.now();
    const answered = this.send({ kind: "switchover" }).then(
      (res) => {
        if (res.status >= 300) this.opts.log.warn("<switchover> refused", { status: res.status, reason: res.reason });
      },
      (err: unknown) => this.opts.log.warn("<switchover> not taken", { error: TeleportError.from(err).message }),
    );
    await Promise.race([answered, sleep(CLAIM_WAIT_MS)]);
    this.claimed = { askedAt: asked, answeredAt: Date.now() };
  }

  async onStopped(vms: string[], firstStopAt: number, lastStopAt: number): Promise<void> {
    // journaled before any rest is sent: from then on only the destination's decision settles them
    this.opts.journal.add({
      migrationId: this.opts.migrationId,
      to: this.opts.to,
      vms: [...this.opts.vms],
      stoppedAt: new Date(firstStopAt).toISOString(),
    });
    this.opts.log.info("group stopped", {
      vms,
      stopSpreadMs: Math.round(lastStopAt - firstStopAt),
      // how long the destination took to claim the group's frames, and how long they waited there before the stop
      ...(this.claimed && {
        claimMs: this.claimed.answeredAt - this.claimed.askedAt,
        claimedBeforeStopMs: Math.round(firstStopAt - this.claimed.answeredAt),
      }),
    });
    await crashPoint("source:stopped");
  }

  async decision(sent: string[], calledOff?: string): Promise<GroupDecision> {
    try {
      return await this.awaitDecision(sent, calledOff);
    } finally {
      this.opts.reporter.releaseStatuses(); // held since the switchover began (call.ts)
    }
  }

  private async awaitDecision(sent: string[], calledOff?: string): Promise<GroupDecision> {
    await crashPoint("source:sent");
    // only the VMs whose rest may have left wait for the decision; the journal goes once they are settled
    for (const vm of [...this.unsettled]) if (!sent.includes(vm)) this.unsettled.delete(vm);
    if (this.unsettled.size === 0) this.opts.journal.remove(this.opts.migrationId);
    if (calledOff) {
      this.opts.log.warn("calling the group off", { reason: calledOff });
      const d = await this.send({ kind: "abort", reason: calledOff.slice(0, 1024) }).then(
        (res) => decisionIn(res.body?.content),
        () => undefined,
      );
      // the destination claimed their MACs at <switchover>: the copies that stay here take them back
      // (a stopped one's own RARPs leave when it runs again, its bridge's claim at once)
      await Promise.all(this.opts.vms.filter((vm) => !sent.includes(vm)).map((vm) => this.announceHere(vm)));
      const taken = d && this.take(d);
      if (taken) return taken;
    } else {
      const d = await Promise.race([this.fromInfo, sleep(DECISION_INFO_WAIT_MS).then(() => undefined)]);
      const taken = d && this.take(d);
      if (taken) return taken;
    }
    return this.ask();
  }

  private async announceHere(vm: string): Promise<void> {
    await this.opts.host
      .find(vm)
      ?.driver.announce?.(vm)
      .catch((err: unknown) => this.opts.log.warn("announce failed", { vm, error: TeleportError.from(err).message }));
  }

  async settle(vm: string, decision: GroupDecision): Promise<void> {
    if (!this.decidedOnce) {
      this.decidedOnce = true;
      await crashPoint("source:decided");
    }
    const driver = this.opts.host.find(vm)?.driver;
    if (!driver) throw new TeleportError(404, `VM ${vm} is not defined on this host`);
    // a copy that is gone here (its QEMU died) has nothing left to settle
    const gone = (await driver.state(vm).catch(() => "absent")) === "absent";
    if (gone && decision.outcome === "abort") {
      this.unsettled.delete(vm);
      if (this.unsettled.size === 0) this.opts.journal.remove(this.opts.migrationId);
      throw new TeleportError(500, `${vm} was called back, but its QEMU here is gone`);
    }
    if (gone) this.opts.log.warn("the source copy is gone already", { vm });
    else await settleCopy(driver, vm, decision.outcome === "commit" && !this.returned.has(vm));
    this.unsettled.delete(vm);
    if (this.unsettled.size === 0) this.opts.journal.remove(this.opts.migrationId);
  }

  private take(d: Decision): GroupDecision | undefined {
    const g = groupDecisionOf(d);
    if (g?.outcome === "commit") this.returned = returnedOf(d);
    return g;
  }

  /** No decision came in the dialog: ask outside it until one does, or give up with the group stopped. */
  private async ask(): Promise<GroupDecision> {
    const until = Date.now() + this.opts.decisionTimeoutMs;
    for (;;) {
      const d = await Promise.race([
        askDecision(this.opts.sip, this.opts.to, this.opts.migrationId, this.opts.log),
        this.fromInfo,
      ]);
      const taken = d && this.take(d);
      if (taken) return taken;
      if (Date.now() >= until)
        throw new TeleportError(504, "no decision from the destination: the group stays stopped here", [
          `the destination did not say whether it runs ${this.opts.vms.join(", ")}`,
          "sip-teleport asks again when it next starts on this host (its journal keeps the group)",
        ]);
      await Promise.race([sleep(QUERY_INTERVAL_MS), this.fromInfo]);
    }
  }

  private send(body: NrdlBody) {
    return this.opts.reporter.request(buildNrdl({ version: this.opts.version, id: this.opts.migrationId, body }));
  }
}

/**
 * How long the stop waits for the destination's claim of the group's MACs: a slow answer costs the
 * group its frames during the stop, a stop much later costs it more (the guests run on meanwhile).
 */
const CLAIM_WAIT_MS = 50;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());
