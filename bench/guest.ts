/**
 * `npm run bench:guest`: how often a live migration breaks the guest (serial log shows
 * "not a head", "kernel BUG", a page fault, a panic or a reboot), per way of migrating, measured
 * side by side in one run on the exp2 testbed with the user's probes running. Variants:
 * `driver` (QemuDriver: -incoming defer, return-path, TLS-PSK, unlimited max-bandwidth),
 * the same by hand with parts switched off, `reference` (the shared recipe: -incoming tcp:, no
 * TLS, no return-path, default max-bandwidth) and `none` (no migration, as long as a move:
 * guests breaking on their own). Moves rotate through the variants; a broken guest is rebooted so
 * it is not counted again. Settings: VARIANTS=a,b (names below), MOVES per variant (default 8),
 * MBIT inter-DC tbf rate (default 100, 0 = unshaped), FRESH=ms: boot the guests afresh before
 * every move and wait that long (the first move after boot broke most often).
 * Broken guests' destination serial logs go to bench/out/guest/.
 */
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import execa from "execa";
import { ensureGuest } from "../lib/guest/guest";
import { repoRoot } from "../lib/version";
import { Lab } from "../test/testbed/lab";
import { EXPERIMENT, hostAddress } from "../test/testbed/experiments";
import { startPing, startTcpEcho, startUdpStream, type Probe } from "../test/testbed/probes";
import { SEGMENT, type HostName } from "../test/testbed/network";
import { QmpClient } from "../lib/hypervisor/qmp";
import { useMigrationSecret } from "../lib/hypervisor/qemu-tls";
import { livePid } from "../lib/hypervisor/pidfile";

interface Variant { name: string; driver?: boolean; tls?: boolean; rp?: boolean; defer?: boolean; bw?: boolean; quitWait?: boolean }
const ALL: Variant[] = [
  { name: "driver", driver: true },
  { name: "tls+rp+defer", tls: true, rp: true, defer: true, bw: true },
  { name: "plain+rp+defer", rp: true, defer: true, bw: true },
  { name: "tls+defer", tls: true, defer: true, bw: true },
  { name: "reference", },
  { name: "none" },
];
const pick = (process.env.VARIANTS ?? "").split(",").filter(Boolean);
const VARIANTS = pick.length ? ALL.filter((v) => pick.includes(v.name)) : ALL;
const MOVES = Number(process.env.MOVES ?? 8);
const MBIT = Number(process.env.MBIT ?? 100);
const OUT = path.join(repoRoot(), "bench", "out", "guest");
const MARK = /not a head|kernel BUG|Kernel panic|GUEST-READY|BUG:|Oops/;

async function customMigrate(lab: Lab, vm: string, from: HostName, to: HostName, v: Variant): Promise<void> {
  const src = lab.driver(from);
  const dst = lab.driver(to);
  const def = dst.inventory().find((d) => d.name === vm);
  if (!def) throw new Error(`${vm} is not in ${to}'s inventory`);
  const port = 40000 + Math.floor(Math.random() * 20000);
  const uri = `tcp:${SEGMENT[to]}:${port}`;
  const args = dst.qemuArgs(def, false).concat(v.defer ? ["-incoming", "defer"] : ["-incoming", uri]);
  await execa(path.join(lab.dir, `qemu-${to}`), args, { stdin: "ignore" });
  const secret = randomBytes(16).toString("hex");
  const dq = await QmpClient.connect(dst.files(vm).qmp);
  const caps = (rp: boolean) => [{ capability: "events", state: true }, { capability: "return-path", state: rp }];
  if (v.rp) await dq.execute("migrate-set-capabilities", { capabilities: caps(true) });
  if (v.tls) await useMigrationSecret(dq, "server", "in", secret, dst.files(vm).pskIn);
  if (v.defer) await dq.execute("migrate-incoming", { uri });
  const sq = await QmpClient.connect(src.files(vm).qmp);
  await sq.execute("migrate-set-capabilities", { capabilities: caps(!!v.rp) });
  await sq.execute("migrate-set-parameters", { "max-bandwidth": v.bw ? 2 ** 40 : 134217728, "downtime-limit": 300, "tls-creds": "" });
  const id = `out${Date.now()}`;
  if (v.tls) await useMigrationSecret(sq, "client", id, secret, src.files(vm).pskOut);
  const done = new Promise<string>((res) => sq.onEvent((e) => { const s = String(e.data.status); if (e.event === "MIGRATION" && /completed|failed|cancelled/.test(s)) res(s); }));
  await sq.execute("migrate", { uri });
  const outcome = await done;
  await sq.close();
  if (outcome !== "completed") throw new Error(`${vm}: ${outcome}`);
  const mq = await QmpClient.connect(src.files(vm).mon);
  await mq.execute("quit").catch(() => undefined);
  await mq.close().catch(() => undefined);
  for (let i = 0; i < 100 && livePid(src.files(vm).pid) !== undefined; i++) await new Promise((r) => setTimeout(r, 30));
  for (let i = 0; i < 200; i++) {
    const st = (await dq.execute<{ status: string }>("query-status")).status;
    if (st === "running") break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await dq.close();
  fs.rmSync(dst.files(vm).pskIn, { recursive: true, force: true });
}

async function driverMigrate(lab: Lab, vm: string, from: HostName, to: HostName): Promise<void> {
  const secret = randomBytes(16).toString("hex");
  const armed = await lab.driver(to).arm(vm, { address: SEGMENT[to], port: 40000 + Math.floor(Math.random() * 20000), secret });
  const h = lab.driver(from).migrate(vm, { uri: armed.uri, secret }, { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 120 });
  await h.done;
  await lab.driver(to).waitResumed(vm, 20000);
}

async function main(): Promise<void> {
  fs.mkdirSync(OUT, { recursive: true });
  const lab = await Lab.create(EXPERIMENT.exp2, await ensureGuest());
  const probes: Probe[] = [];
  const tally = new Map<string, { moves: number; bad: number; lines: string[] }>();
  try {
    await lab.bootAll();
    if (MBIT > 0) await lab.net.shapeInterDc(MBIT);
    const user = lab.net.exec("user");
    for (const gs of lab.exp.guests) probes.push(startPing(user, gs.name, hostAddress(gs)));
    probes.push(await startTcpEcho(user, lab.dir, "tcp", "10.20.0.10"));
    probes.push(await startUdpStream(user, lab.dir, "udp", "10.20.0.10", { sourcePort: 45000 + Math.floor(Math.random() * 1000) }));
    let where: HostName = "dc1";
    for (let i = 0; i < MOVES * VARIANTS.length; i++) {
      const v = VARIANTS[i % VARIANTS.length];
      if (process.env.FRESH) {
        // every move starts from freshly booted guests on dc1 (the first move after boot broke most often)
        for (const gs of lab.exp.guests) { await lab.driver(where).stop(gs.name); await lab.driver("dc1").start(gs.name); }
        where = "dc1";
        for (const gs of lab.exp.guests) for (let k = 0; k < 120 && (await lab.uptime(gs)) === undefined; k++) await new Promise((r) => setTimeout(r, 250));
        await new Promise((r) => setTimeout(r, Number(process.env.FRESH)));
      }
      const to: HostName = v.name === "none" ? where : where === "dc1" ? "dc2" : "dc1";
      const offsets = new Map(lab.exp.guests.map((gs) => { const f = lab.driver(to).files(gs.name).serial; return [gs.name, fs.existsSync(f) ? fs.statSync(f).size : 0]; }));
      const t0 = Date.now();
      if (v.name === "none") await new Promise((r) => setTimeout(r, 15000));
      else await Promise.all(lab.exp.guests.map((gs) => (v.driver ? driverMigrate(lab, gs.name, where, to) : customMigrate(lab, gs.name, where, to, v))));
      const dt = Date.now() - t0;
      if (v.name !== "none") where = to;
      await new Promise((r) => setTimeout(r, 3000));
      const t = tally.get(v.name) ?? { moves: 0, bad: 0, lines: [] };
      tally.set(v.name, t);
      for (const gs of lab.exp.guests) {
        t.moves++;
        const f = lab.driver(to).files(gs.name).serial;
        const text = fs.readFileSync(f).subarray(offsets.get(gs.name) ?? 0).toString();
        const hits = text.split("\n").filter((l) => MARK.test(l));
        if (hits.length) {
          t.bad++;
          t.lines.push(`${i} ${gs.name}: ${hits.slice(0, 3).join(" | ")}`);
          fs.copyFileSync(f, path.join(OUT, `${lab.net.prefix}-${i}-${v.name}-${gs.name}.serial.log`));
        }
        console.log(`move ${i} ${v.name} ${gs.name} -> ${to} ${dt} ms ${hits.length ? "BAD " + hits[0] : "ok"}`);
      }
      for (const gs of lab.exp.guests) {
        if (!t.lines.some((l) => l.startsWith(`${i} ${gs.name}:`))) continue;
        // a broken guest must not be counted again by the next variant: boot it afresh
        await lab.driver(to).stop(gs.name);
        await lab.driver(to).start(gs.name);
        for (let k = 0; k < 120 && (await lab.uptime(gs)) === undefined; k++) await new Promise((r) => setTimeout(r, 500));
        console.log(`  restarted ${gs.name} on ${to}`);
      }
    }
  } finally {
    for (const p of probes) await p.stop().catch(() => undefined);
    console.log(`\nbroken guests per VM-move (2 VMs per move), MBIT=${MBIT}${process.env.FRESH ? ", fresh guests" : ""}`);
    for (const [k, t] of tally) console.log(`${k.padEnd(16)} ${t.bad}/${t.moves} bad  ${t.lines.join(" ;; ")}`);
    await lab.destroy();
  }
}
void main().catch((e) => { console.error(e); process.exitCode = 1; });
