/**
 * Source side of a disk copy: each copied disk is mirrored (blockdev-mirror) into the
 * destination's NBD export before the memory moves, as libvirt does for --copy-storage-all.
 * Once every mirror is in sync (BLOCK_JOB_READY) the guest's writes go to both images; at the
 * switchover, with the VM stopped (pause-before-switchover), each mirror is completed
 * (block-job-cancel of a ready job: everything written up to the stop reaches the destination,
 * and the source image stays the VM's own) before the device state is sent.
 */
import { TeleportError } from "../errors";
import type { Logger } from "../log/logger";
import type { DiskExport } from "../../nrdl/types";
import type { DiskProgress } from "./driver";
import { diskNode } from "./qemu-disks";
import type { QmpClient, QmpEvent } from "./qmp";
import { addPskCredentials } from "./qemu-tls";

export interface MirrorDisk {
  target: string;
  /** copy: the whole image (sync full); copy-top: the top overlay only (sync top). */
  mode: "copy" | "copy-top";
  export: DiskExport;
}

/** How long an abort waits for the mirrors to end before it lets the move fail without them. */
const ABORT_WAIT_MS = 3000;

interface BlockJob {
  device: string;
  len: number;
  offset: number;
  ready?: boolean;
  paused?: boolean;
}

/** "nbd://HOST:PORT/EXPORT" as QEMU's nbd driver options. */
function nbdServer(uri: string): { host: string; port: string; export: string } {
  const m = /^nbd:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/(.+)$/.exec(uri);
  if (!m) throw new TeleportError(502, `bad NBD URI from the destination: ${uri}`);
  return { host: m[1].replace(/^\[|\]$/g, ""), port: m[2], export: m[3] };
}

export class DiskMirrors {
  private readonly jobs: string[];
  private readonly ready = new Set<string>();
  private readonly completed = new Set<string>();
  /** Conditions awaited; each returns true once settled. */
  private waiters: Array<() => boolean> = [];
  private aborting = false;
  private failure: TeleportError | undefined;
  private bytes = 0;
  private readonly stamp = Date.now().toString(36);
  private off: (() => void) | undefined;
  /** Called once when a mirror fails after it was started (destination gone, disk full, ...). */
  onFailure: ((err: TeleportError) => void) | undefined;

  constructor(
    private readonly client: QmpClient,
    private readonly vm: string,
    private readonly disks: MirrorDisk[],
    private readonly pskDir: string | undefined,
    private readonly log: Logger,
  ) {
    this.jobs = disks.map((d) => this.jobId(d.target));
  }

  private jobId(target: string): string {
    return `st-mirror-${target}`;
  }

  /** Connect to every export and start every mirror at `bytesPerS` in all (0 = unlimited). */
  async start(bytesPerS: number): Promise<void> {
    await this.clearEarlierAttempt();
    this.off = this.client.onEvent((ev) => this.onEvent(ev));
    const speed = bytesPerS > 0 ? Math.max(1, Math.floor(bytesPerS / this.disks.length)) : 0;
    for (const d of this.disks) {
      const server = nbdServer(d.export.uri);
      const creds = `st-nbd-${d.target}-${this.stamp}`;
      const options: Record<string, unknown> = {
        driver: "nbd",
        "node-name": `st-nbd-${d.target}`,
        server: { type: "inet", host: server.host, port: server.port },
        export: server.export,
      };
      if (this.pskDir) {
        await addPskCredentials(this.client, "client", creds, d.export.secret, this.pskDir);
        options["tls-creds"] = creds;
      }
      await this.client.execute("blockdev-add", options);
      await this.client.execute("blockdev-mirror", {
        "job-id": this.jobId(d.target),
        device: diskNode(d.target),
        target: `st-nbd-${d.target}`,
        sync: d.mode === "copy-top" ? "top" : "full",
        speed,
      });
    }
    this.log.info(`mirroring disks of ${this.vm}`, { disks: this.disks.map((d) => d.target), speed });
  }

  /** Resolves when every mirror is in sync; rejects as soon as one fails. */
  whenReady(): Promise<void> {
    return this.until(() => this.jobs.every((j) => this.ready.has(j)));
  }

  async progress(): Promise<DiskProgress> {
    const jobs = await this.client.execute<BlockJob[]>("query-block-jobs");
    const mine = jobs.filter((j) => this.jobs.includes(j.device));
    const total = mine.reduce((n, j) => n + j.len, 0);
    const done = mine.reduce((n, j) => n + j.offset, 0);
    if (mine.length) this.bytes = done;
    return {
      transferredBytes: this.bytes,
      totalBytes: Math.max(total, this.bytes),
      progress: total ? done / total : 1,
    };
  }

  /** Share of the bandwidth cap once in sync: the guest's new writes only. */
  async setSpeed(bytesPerS: number): Promise<void> {
    const speed = bytesPerS > 0 ? Math.max(1, Math.floor(bytesPerS / this.disks.length)) : 0;
    for (const job of this.jobs) await this.client.execute("block-job-set-speed", { device: job, speed });
  }

  /**
   * With the VM stopped: finish every mirror so the destination holds every write up to the stop.
   * Returns the disk bytes copied.
   */
  async complete(): Promise<number> {
    await this.setSpeed(0).catch(() => undefined); // the guest waits: no cap on the last blocks
    // QEMU refuses to complete a paused job (someone's block-job-pause): it has blocks to copy too
    const jobs = await this.client.execute<BlockJob[]>("query-block-jobs");
    for (const job of jobs.filter((j) => this.jobs.includes(j.device) && j.paused))
      await this.client.execute("block-job-resume", { device: job.device });
    for (const job of this.jobs) await this.client.execute("block-job-cancel", { device: job, force: false });
    await this.until(() => this.jobs.every((j) => this.completed.has(j)));
    await this.detach();
    this.log.info(`disks of ${this.vm} complete at the destination`, { bytes: this.bytes });
    return this.bytes;
  }

  /**
   * Stop every mirror at once; the source image is the VM's and was never touched. A mirror whose
   * destination became unreachable (link cut) cannot end before its pending writes fail: QEMU
   * ends it when the connection does, the guest meanwhile runs on its own disk, and the next
   * move clears what is left (clearEarlierAttempt).
   */
  async abort(): Promise<void> {
    this.aborting = true;
    for (const job of this.jobs)
      if (!this.completed.has(job))
        await this.client.execute("block-job-cancel", { device: job, force: true }).catch(() => undefined);
    const ended = await Promise.race([
      this.until(() => this.jobs.every((j) => this.completed.has(j))).then(
        () => true,
        () => true,
      ),
      new Promise<boolean>((r) => setTimeout(() => r(false), ABORT_WAIT_MS).unref()),
    ]);
    if (!ended)
      this.log.warn(`disk mirror of ${this.vm} still waits for its unreachable destination`, {
        why: "its writes in flight end when the connection fails; the VM runs on its own disk meanwhile",
      });
    await this.detach();
  }

  /** What an earlier move of this VM left in its QEMU (a mirror that outlived its abort): gone, or a clear refusal. */
  private async clearEarlierAttempt(): Promise<void> {
    if ((await dropOrphanedMirrors(this.client)) === 0) return;
    const left = await this.client.execute<BlockJob[]>("query-block-jobs");
    if (left.some((j) => this.jobs.includes(j.device)))
      throw new TeleportError(503, `a disk mirror of an earlier move of ${this.vm} is still running`, [
        "it waits for a destination that became unreachable; QEMU ends it when that connection fails",
        "the VM runs here on its own disk; try again in a while",
      ]);
  }

  private async detach(): Promise<void> {
    this.off?.();
    for (const d of this.disks) {
      await this.client.execute("blockdev-del", { "node-name": `st-nbd-${d.target}` }).catch(() => undefined);
      await this.client.execute("object-del", { id: `st-nbd-${d.target}-${this.stamp}` }).catch(() => undefined);
    }
  }

  private until(done: () => boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        if (this.failure) reject(this.failure);
        else if (done()) resolve();
        else return false;
        return true;
      };
      if (!check()) this.waiters.push(check);
    });
  }

  private onEvent(ev: QmpEvent): void {
    const job = String(ev.data?.device ?? "");
    if (!this.jobs.includes(job)) return;
    if (ev.event === "BLOCK_JOB_READY") this.ready.add(job);
    if (ev.event === "BLOCK_JOB_COMPLETED" || ev.event === "BLOCK_JOB_CANCELLED") {
      this.completed.add(job);
      if (typeof ev.data.offset === "number") this.bytes = Math.max(this.bytes, ev.data.offset);
      const error = ev.data.error ?? (ev.event === "BLOCK_JOB_CANCELLED" ? "cancelled" : undefined);
      if (error !== undefined && !this.failure && !this.aborting) {
        this.failure = new TeleportError(503, `disk mirror of ${this.vm} failed: ${String(error)}`, [
          "the VM keeps running on the source with its disk untouched",
        ]);
        this.onFailure?.(this.failure);
      }
    }
    this.waiters = this.waiters.filter((w) => !w());
  }
}

/**
 * After the source agent died: stop the disk mirrors it left in this QEMU and detach their NBD
 * connections, so the VM runs on its own disk alone and a later move can mirror again. Returns
 * how many mirrors it stopped.
 */
export async function dropOrphanedMirrors(client: QmpClient): Promise<number> {
  const orphans = (await client.execute<BlockJob[]>("query-block-jobs")).filter((j) =>
    j.device.startsWith("st-mirror-"),
  );
  for (const job of orphans)
    await client.execute("block-job-cancel", { device: job.device, force: true }).catch(() => undefined);
  for (let i = 0; i < 100; i++) {
    const left = await client.execute<BlockJob[]>("query-block-jobs");
    if (!left.some((j) => j.device.startsWith("st-mirror-"))) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const nodes = await client.execute<Array<{ "node-name": string }>>("query-named-block-nodes", { flat: true });
  for (const n of nodes.filter((x) => x["node-name"].startsWith("st-nbd-")))
    await client.execute("blockdev-del", { "node-name": n["node-name"] }).catch(() => undefined);
  const objects = await client.execute<Array<{ name: string }>>("qom-list", { path: "/objects" });
  for (const o of objects.filter((x) => x.name.startsWith("st-nbd-")))
    await client.execute("object-del", { id: o.name }).catch(() => undefined);
  return orphans.length;
}
