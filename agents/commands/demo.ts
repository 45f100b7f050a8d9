/**
 * `sip-teleport demo` (the README's main job): two "hosts" on this machine, dc1 and dc2, each
 * with its own run directory and SIP endpoint on loopback. A real destination agent runs as its
 * own process; the thesis' exp2 group (router1, video) boots under QEMU on dc1 and moves to dc2
 * over SIP, with the progress display, the final table and the SIP ladder. Nothing external.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { TeleportError } from "../../lib/errors";
import { livePid } from "../../lib/hypervisor/pidfile";
import { createLogger } from "../../lib/log/logger";
import { freePortInRange } from "../../lib/net/ports";
import { ladderSteps, renderLadder, type TraceEvent } from "../../lib/sip/ladder";
import { repoRoot } from "../../lib/version";
import { ensureGuest } from "../../lib/guest/guest";
import { loadConfig } from "../../lib/config/load";
import { SourceAgent } from "../source/agent";
import { ProgressDisplay } from "../source/progress-display";
import { hostOf, sipOf } from "../wiring";
import { startDrachtioServer, type DrachtioServer } from "../../lib/sip/drachtio/server-process";
import { reportError } from "./common";

const VMS = [
  { name: "router1", role: "router", mac: "52:54:00:5e:00:11" },
  { name: "video", role: "server", mac: "52:54:00:5e:00:12" },
];

function say(s: string): void {
  process.stdout.write(s + "\n");
}

/** The two hosts' configs: identical inventories, separate run dirs, SIP on loopback. */
/** With `--backend drachtio`: each host's drachtio-server (admin port; the secret travels in the environment). */
type DemoServers = Record<"dc1" | "dc2", { adminPort: number; secretEnv: string }>;

function writeHosts(
  dir: string,
  kernel: string,
  initrd: string,
  sipPort: number,
  servers?: DemoServers,
): { dc1: string; dc2: string } {
  const inventory = {
    vms: VMS.map((v) => ({
      name: v.name,
      role: v.role,
      memoryMib: 96,
      kernel,
      initrd,
      append: `console=ttyS0 quiet panic=-1 st.name=${v.name}`,
      nics: [{ kind: "user", mac: v.mac }],
    })),
  };
  fs.writeFileSync(path.join(dir, "inventory.json"), JSON.stringify(inventory, null, 2));
  // Loopback proves nothing (any local account reaches it): dc1 proves itself to dc2 with digest, a password
  // made for this run only, in files only this user reads.
  const password = randomBytes(18).toString("base64url");
  const trust = {
    dc1: { sip: { credentials: { username: "dc1", password } }, security: {} },
    dc2: { sip: {}, security: { users: { dc1: password }, allow: ["sip:dc1@127.0.0.1"] } },
  };
  const host = (name: "dc1" | "dc2", port: number, ports: string) => ({
    host: name,
    sip: {
      aor: `sip:${name}@127.0.0.1`,
      listen: [{ transport: "udp", address: "127.0.0.1", port }],
      ...trust[name].sip,
      ...(servers && {
        backend: "drachtio",
        drachtio: { host: "127.0.0.1", port: servers[name].adminPort, secretEnv: servers[name].secretEnv },
      }),
    },
    inventory: "inventory.json",
    runDir: `${name}/run`,
    stateDir: `${name}/state`,
    migration: { address: "127.0.0.1", ports },
    security: trust[name].security,
  });
  const files = { dc1: path.join(dir, "dc1.json"), dc2: path.join(dir, "dc2.json") };
  fs.writeFileSync(files.dc1, JSON.stringify(host("dc1", 0, "49300-49349"), null, 2), { mode: 0o600 });
  fs.writeFileSync(files.dc2, JSON.stringify(host("dc2", sipPort, "49350-49399"), null, 2), { mode: 0o600 });
  return files;
}

/** Start `sip-teleport listen` as its own process and wait until it listens. */
function startDestination(configFile: string, logFile: string): Promise<ChildProcess> {
  const cli = path.join(__dirname, "..", "cli.js");
  const log = fs.openSync(logFile, "w");
  const child = spawn(process.execPath, [cli, "listen", "-c", configFile], { stdio: ["ignore", "pipe", log] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new TeleportError(500, "the destination agent did not start", [`see ${logFile}`])),
      15000,
    );
    child.stdout?.on("data", (d: Buffer) => {
      if (d.toString().includes("listening as")) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(
        new TeleportError(500, `the destination agent exited (${code})`, [fs.readFileSync(logFile, "utf8").trim()]),
      );
    });
  });
}

/** Two drachtio-servers from the shared build, dc2's on the destination's SIP port. */
async function startServers(sipPort: number): Promise<{ servers: DemoServers; all: DrachtioServer[] }> {
  const [s1, s2] = await Promise.all([startDrachtioServer(), startDrachtioServer({ sipPort })]);
  const servers: DemoServers = {
    dc1: { adminPort: s1.adminPort, secretEnv: "SIP_TELEPORT_DEMO_DC1_SECRET" },
    dc2: { adminPort: s2.adminPort, secretEnv: "SIP_TELEPORT_DEMO_DC2_SECRET" },
  };
  // the agents (this process and the dc2 child) read the secrets from the environment
  process.env.SIP_TELEPORT_DEMO_DC1_SECRET = s1.secret;
  process.env.SIP_TELEPORT_DEMO_DC2_SECRET = s2.secret;
  return { servers, all: [s1, s2] };
}

export async function runDemo(opts: { keep?: boolean; backend?: string }): Promise<number> {
  const root = repoRoot();
  const dir = path.join(root, ".cache", "demo");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const logger = createLogger({ level: "warn" });
  say("sip-teleport demo: the thesis' experiment 2 (a router and a video server) moved from dc1 to dc2 over SIP\n");
  say("* building the guest (Debian cloud kernel + busybox initramfs, cached in .cache/guest)");
  const guest = await ensureGuest();
  const sipPort = (await freePortInRange("127.0.0.1", "25060-25999")) ?? 25060;
  if (opts.backend !== undefined && opts.backend !== "sipjs" && opts.backend !== "drachtio")
    throw new TeleportError(400, `--backend ${opts.backend}: expected sipjs or drachtio`);
  const drachtio = opts.backend === "drachtio" ? await startServers(sipPort) : undefined;
  if (drachtio)
    say(
      `* started two drachtio-servers (SIP dc1 127.0.0.1:${drachtio.all[0].sipPort}, dc2 127.0.0.1:${sipPort}); ` +
        "the agents run as drachtio-srf apps on them",
    );
  const files = writeHosts(dir, guest.kernel, guest.initrd, sipPort, drachtio?.servers);
  const dc1 = loadConfig(files.dc1);
  const dc2 = loadConfig(files.dc2);
  const src = hostOf(dc1, logger);
  const dstHost = hostOf(dc2, logger);
  const qemu = src.driver("qemu");
  const avail = qemu ? await qemu.available() : { ok: false, detail: "no QEMU driver" };
  if (!avail.ok)
    throw new TeleportError(503, "QEMU is not usable here", [
      avail.detail,
      "install it: apt-get install -y --no-install-recommends qemu-system-x86",
    ]);

  let destination: ChildProcess | undefined;
  const sip = sipOf(dc1, logger, { ephemeral: true });
  const trace: TraceEvent[] = [];
  sip.onTrace((e) => trace.push(e));
  try {
    say(
      `* starting the destination agent (dc2) as its own process: sip:dc2@127.0.0.1:${sipPort} ` +
        `(log: ${path.relative(root, dir)}/dc2.log)`,
    );
    destination = await startDestination(files.dc2, path.join(dir, "dc2.log"));
    say(`* booting ${VMS.map((v) => v.name).join(" and ")} under QEMU on dc1 (${path.relative(root, dc1.runDir)})`);
    await Promise.all(VMS.map((v) => qemu?.start(v.name)));
    await sip.start();
    const agent = new SourceAgent({
      sip,
      host: src,
      hostName: dc1.host,
      logger,
      answerTimeoutS: dc1.timers.answerTimeoutS,
    });
    const display = new ProgressDisplay(process.stdout.isTTY ? "tty" : "plain");
    // the defaults hold the host's compress and dedup choices, which are the request's, not policy attributes
    const { compress, dedup, ...defaults } = dc1.defaults;
    const summary = await agent.migrate(
      {
        to: `sip:dc2@127.0.0.1:${sipPort}`,
        vms: VMS.map((v) => v.name),
        policy: { ...defaults, maxParallel: 1 },
        compress,
        dedup,
      },
      display,
    );
    display.summary(summary);
    say("\nThe SIP dialog:");
    process.stdout.write(renderLadder(ladderSteps(trace), "dc1 (source)", "dc2 (destination)"));
    say("\nWhere each VM runs now (it must be exactly one host):");
    let ok = summary.outcome === "completed";
    for (const v of VMS) {
      const on = [
        ["dc1", dc1.runDir],
        ["dc2", dc2.runDir],
      ]
        .filter(([, d]) => livePid(path.join(d, `${v.name}.pid`)) !== undefined)
        .map(([h]) => h);
      const state = await dstHost.find(v.name)?.driver.state(v.name);
      say(
        `  ${v.name.padEnd(8)} ${on.join(", ") || "nowhere"}${on.length === 1 && on[0] === "dc2" ? ` (${state})` : ""}`,
      );
      ok &&= on.length === 1 && on[0] === "dc2" && state === "running";
    }
    say(ok ? "\ndemo: OK" : "\ndemo: FAILED");
    return ok ? 0 : 1;
  } finally {
    await sip.stop().catch(() => undefined);
    destination?.kill("SIGTERM");
    for (const server of drachtio?.all ?? []) await server.stop();
    if (!opts.keep) {
      for (const h of [src, dstHost])
        for (const v of VMS)
          await h
            .find(v.name)
            ?.driver.stop(v.name)
            .catch(() => undefined);
      say("* stopped the demo VMs (use --keep to leave them running on dc2)");
    }
  }
}

export function registerDemoCommand(program: Command): void {
  program
    .command("demo")
    .description(
      "migrate two real QEMU VMs between two local hosts over SIP (the quick start; needs QEMU, nothing external)",
    )
    .option("--keep", "leave the VMs running on dc2 afterwards (stop them with `sip-teleport vm stop`)")
    .option(
      "--backend <kind>",
      "SIP stack of both agents: sipjs (built in) or drachtio (drachtio-srf apps on two drachtio-servers " +
        "the demo starts: $SIP_TELEPORT_DRACHTIO_BIN, ../shared/drachtio/bin/drachtio or scripts/build-drachtio.sh's)",
      "sipjs",
    )
    .addHelpText(
      "after",
      "\nExamples:\n  $ npm run demo        # or: sip-teleport demo\n  $ npm run demo -- --backend drachtio",
    )
    .action(async (o: { keep?: boolean; backend?: string }) => {
      try {
        process.exitCode = await runDemo(o);
      } catch (err) {
        reportError(err);
        process.exitCode = 1;
      }
    });
}
