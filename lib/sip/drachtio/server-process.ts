/**
 * A drachtio-server of our own (tests, demo, benchmarks): generated config, free ports, started
 * from the shared build or the project's own (drachtioCandidates). Operators run their own server
 * and only point the agent at it.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import dgram from "node:dgram";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { repoRoot } from "../../version";

/**
 * Where a drachtio-server binary may be, in order: $SIP_TELEPORT_DRACHTIO_BIN, the shared build beside the
 * clone (`../shared/drachtio/bin/drachtio`, one level up again from a git worktree), then the project's own
 * build in its cache (`scripts/build-drachtio.sh`).
 */
export function drachtioCandidates(): string[] {
  const root = repoRoot();
  return [
    ...(process.env.SIP_TELEPORT_DRACHTIO_BIN ? [process.env.SIP_TELEPORT_DRACHTIO_BIN] : []),
    path.join(root, "..", "shared", "drachtio", "bin", "drachtio"),
    path.join(root, "..", "..", "shared", "drachtio", "bin", "drachtio"),
    path.join(root, ".cache", "drachtio", "bin", "drachtio"),
  ];
}

/** The first drachtio-server binary found (see drachtioCandidates), or undefined. */
export function drachtioBinary(): string | undefined {
  return drachtioCandidates().find((c) => fs.existsSync(c));
}

/** One line for a missing drachtio-server: where it was looked for and the command that fixes it. */
export function drachtioMissing(): string {
  const looked = drachtioCandidates().map((c) => path.relative(process.cwd(), c) || c);
  return (
    `no drachtio-server binary (looked at ${looked.join(", ")}): run \`bash scripts/build-drachtio.sh\` ` +
    "or set SIP_TELEPORT_DRACHTIO_BIN"
  );
}

export interface DrachtioServerOptions {
  /** Address the SIP contact and admin port bind (default 127.0.0.1). */
  address?: string;
  /** SIP port (default: a free one). */
  sipPort?: number;
  /** SIP transports the contact lists (default udp and tcp). */
  transports?: Array<"udp" | "tcp">;
  /**
   * A TLS contact too (on a free port), with this certificate and key (PEM files). sofia-sip will
   * not open it without a CA list, `cafile.pem` in the server's working directory: `ca`, else `cert`.
   */
  tls?: { cert: string; key: string; ca?: string };
}

export interface DrachtioServer {
  readonly address: string;
  readonly adminPort: number;
  readonly sipPort: number;
  /** The TLS contact's port, when started with `tls`. */
  readonly tlsPort?: number;
  readonly secret: string;
  readonly pid: number;
  /** The server's console log so far (for test failures). */
  log(): string;
  stop(): Promise<void>;
  /** Kill and start again on the same ports (the agent must reconnect). */
  restart(): Promise<void>;
}

/** A port free on both TCP and UDP right now. */
export async function freeSipPort(address: string): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = net.createServer();
      srv.once("error", reject);
      srv.listen({ host: address, port: 0 }, () => {
        const p = (srv.address() as net.AddressInfo).port;
        srv.close(() => resolve(p));
      });
    });
    const udpFree = await new Promise<boolean>((resolve) => {
      const s = dgram.createSocket("udp4");
      s.once("error", () => resolve(false));
      s.bind(port, address, () => s.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
}

function waitForPort(address: string, port: number, child: ChildProcess, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      if (child.exitCode !== null) return reject(new Error(`drachtio-server exited with ${child.exitCode}`));
      const sock = net.connect({ host: address, port }, () => {
        sock.destroy();
        resolve();
      });
      sock.once("error", () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`drachtio-server admin port ${port} did not open in ${ms} ms`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

/** drachtio-server quit before its admin port opened. */
class ServerExited extends Error {}

/**
 * Start a drachtio-server on free loopback ports. The ports are found free and then bound by the
 * server: another process may take one in between, and the server then quits at once. A start that
 * ends so is tried again on other ports (three times in all).
 */
export async function startDrachtioServer(opts: DrachtioServerOptions = {}): Promise<DrachtioServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !(err instanceof ServerExited)) throw err;
    }
  }
}

async function startOnce(opts: DrachtioServerOptions): Promise<DrachtioServer> {
  const bin = drachtioBinary();
  if (!bin) throw new Error(drachtioMissing());
  const address = opts.address ?? "127.0.0.1";
  const adminPort = await freeSipPort(address);
  const sipPort = opts.sipPort ?? (await freeSipPort(address));
  const secret = randomBytes(12).toString("hex");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `st-drachtio-${process.pid}-`));
  const conf = path.join(dir, "drachtio.conf.xml");
  const transports = (opts.transports ?? ["udp", "tcp"]).join(",");
  const tlsPort = opts.tls ? await freeSipPort(address) : undefined;
  if (opts.tls) fs.copyFileSync(opts.tls.ca ?? opts.tls.cert, path.join(dir, "cafile.pem"));
  const tls = opts.tls
    ? [
        `    <contact>sips:${address}:${tlsPort};transport=tls</contact>`,
        `  </contacts><tls><key-file>${opts.tls.key}</key-file><cert-file>${opts.tls.cert}</cert-file></tls>`,
      ]
    : ["  </contacts>"];
  fs.writeFileSync(
    conf,
    [
      "<drachtio>",
      `  <admin port="${adminPort}" secret="${secret}">${address}</admin>`,
      `  <sip><contacts><contact>sip:${address}:${sipPort};transport=${transports}</contact>`,
      ...tls,
      "  </sip>",
      "  <logging><console/><loglevel>notice</loglevel><sofia-loglevel>1</sofia-loglevel></logging>",
      "</drachtio>",
      "",
    ].join("\n"),
    { mode: 0o600 },
  );
  let output = "";
  let child: ChildProcess;
  const launch = async (): Promise<void> => {
    child = spawn(bin, ["-f", conf], { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    const keep = (b: Buffer): void => {
      output = (output + b.toString()).slice(-20_000);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    await waitForPort(address, adminPort, child, 10_000);
  };
  const kill = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  };
  try {
    await launch();
  } catch (err) {
    await kill();
    fs.rmSync(dir, { recursive: true, force: true });
    const why = `${(err as Error).message}; its last output: ${output.slice(-600).trim() || "(none)"}`;
    throw child!.exitCode !== null ? new ServerExited(why) : new Error(why);
  }
  return {
    address,
    adminPort,
    sipPort,
    tlsPort,
    secret,
    get pid() {
      return child.pid ?? 0;
    },
    log: () => output,
    stop: async () => {
      await kill();
      fs.rmSync(dir, { recursive: true, force: true });
    },
    restart: async () => {
      await kill();
      await launch();
    },
  };
}
