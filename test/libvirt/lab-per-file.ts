/**
 * One two-libvirtd lab per test file (hosts.ts), and what its tests share: a pair per test on
 * that lab, closed after it with every domain the test left running, and the CLI processes it ran.
 */
import { ensureBuilt, type CliProcess } from "../e2e/cli-process";
import { startPair, type Pair, type PairOptions } from "../harness";
import { journalOf } from "../security/fault-report";
import { libvirtVms, startLibvirtLab, type LibvirtLab } from "./hosts";

export const policy = {
  strategy: "sequential" as const,
  maxParallel: 1,
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 60,
  onError: "abort" as const,
};

export interface LabFile {
  lab(): LibvirtLab;
  /** A pair on the lab whose inventories hold these domains, defined alike on both hosts; closed after the test. */
  pairFor(vms: Array<[string, "server" | "router"]>, opts?: PairOptions): Promise<Pair>;
  /** A pair started by the test itself (closed after it too). */
  keep(pair: Pair): Pair;
  /** A CLI process killed after the test. */
  track(p: CliProcess): CliProcess;
}

export function labPerFile(): LabFile {
  let lab: LibvirtLab | undefined;
  let pair: Pair | undefined;
  const procs: CliProcess[] = [];
  beforeAll(async () => {
    ensureBuilt();
    lab = await startLibvirtLab();
  });
  afterAll(async () => lab?.close());
  afterEach(async () => {
    for (const p of procs.splice(0)) p.child.kill("SIGKILL");
    await pair?.close();
    pair = undefined;
    await lab?.reset();
  });
  const theLab = () => {
    if (!lab) throw new Error("the libvirt lab is not up");
    return lab;
  };
  return {
    lab: theLab,
    pairFor: async (vms, opts = {}) => {
      const defs = await libvirtVms(theLab(), vms);
      pair = await startPair(defs.dc1, {
        ...opts,
        dc1: { inventory: defs.dc1 },
        dc2: { ...opts.dc2, inventory: defs.dc2 },
      });
      return pair;
    },
    keep: (p) => (pair = p),
    track: (p) => (procs.push(p), p),
  };
}

export async function boot(p: Pair, names: string[]): Promise<void> {
  for (const n of names) await p.dc1.host.find(n)?.driver.start(n);
}

export const journal = (p: Pair): string[] => journalOf(p.dc2.cfg.stateDir);
