/**
 * The VirtualBox driver against a fake VBoxManage (test/fixtures/VBoxManage) that records argv and
 * plays back what VirtualBox 7 prints. Two fake hosts share one world file; each has its own
 * VBoxManage on a PATH-like folder, the way each real host has its own VirtualBox.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import winston from "winston";
import { TeleportError } from "../../lib/errors";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { parseTcpUri, VirtualBoxDriver, vboxRunState } from "../../lib/hypervisor/virtualbox";

const FAKE = path.resolve(__dirname, "../fixtures/VBoxManage");
const SECRET = "teleport-secret-7f3a";
const defs: VmDefinition[] = [
  { name: "vm1", hypervisor: "virtualbox", role: "server", memoryMib: 512, cpus: 1, disks: [], nics: [] },
];

let dir: string;
let world: string;
let logged: string[];
let dc1: VirtualBoxDriver;
let dc2: VirtualBoxDriver;
const savedEnv = { ...process.env };

/** Everything the driver logs, as written. */
function captureStream(): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, next) {
      logged.push(chunk.toString());
      next();
    },
  });
}

/** A per-host VBoxManage: the fake with FAKE_VBOX_HOST set. */
function hostBin(host: string): string {
  const bin = path.join(dir, host, "VBoxManage");
  fs.mkdirSync(path.dirname(bin), { recursive: true });
  fs.writeFileSync(bin, `#!/bin/sh\nFAKE_VBOX_HOST=${host} exec "${FAKE}" "$@"\n`, { mode: 0o755 });
  return bin;
}

function vm(state: string) {
  return {
    uuid: "3c0e9c1e-5c59-4d1c-9f55-6c1f1f1f1f1f",
    memory: 512,
    state,
    changed: "2026-01-01T00:00:00.000000000",
    teleporter: { on: false },
  };
}

function calls(): { host: string; argv: string[]; passwordFileMode?: string }[] {
  return fs
    .readFileSync(`${world}.argv.jsonl`, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
}

function worldState(key: string): string {
  return JSON.parse(fs.readFileSync(world, "utf8")).vms[key].state;
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-vbox-"));
  world = path.join(dir, "world.json");
  fs.writeFileSync(world, JSON.stringify({ vms: { "dc1/vm1": vm("running"), "dc2/vm1": vm("poweroff") } }));
  process.env.FAKE_VBOX_WORLD = world;
  process.env.FAKE_VBOX_STEP_MS = "20";
  logged = [];
  const logger = winston.createLogger({
    level: "debug",
    format: winston.format.json(),
    transports: [new winston.transports.Stream({ stream: captureStream() })],
  });
  // dc1 finds VBoxManage on PATH, like an operator's host; dc2 is given its path.
  hostBin("dc1");
  process.env.PATH = `${path.join(dir, "dc1")}:${savedEnv.PATH}`;
  dc1 = new VirtualBoxDriver({ runDir: path.join(dir, "run1"), inventory: defs, logger, pollMs: 20 });
  dc2 = new VirtualBoxDriver({
    runDir: path.join(dir, "run2"),
    inventory: defs,
    logger,
    vboxManage: hostBin("dc2"),
    pollMs: 20,
  });
});

afterEach(() => {
  process.env = { ...savedEnv };
  fs.rmSync(dir, { recursive: true, force: true });
});

function expectSecretNowhere(): void {
  const everything = JSON.stringify(calls()) + logged.join("\n");
  expect(everything).not.toContain(SECRET);
  // password files are gone
  for (const run of ["run1", "run2"]) {
    const d = path.join(dir, run);
    if (fs.existsSync(d)) expect(fs.readdirSync(d)).toEqual([]);
  }
}

test("teleport: the exact VBoxManage contract, progress, and the secret only in 0600 files", async () => {
  expect(await dc1.available()).toEqual({ ok: true, detail: "VirtualBox 7.0.20r163906" });
  expect(await dc1.state("vm1")).toBe("running");
  expect(await dc2.state("vm1")).toBe("absent");
  const armed = await dc2.arm("vm1", { address: "127.0.0.1", port: 6000, secret: SECRET });
  expect(armed).toEqual({ vm: "vm1", uri: "tcp:127.0.0.1:6000", exports: [] });
  expect(await dc2.state("vm1")).toBe("incoming");
  const percents: number[] = [];
  const result = await dc1.migrate(
    "vm1",
    { uri: armed.uri, secret: SECRET },
    {
      bandwidthMbps: 0,
      downtimeLimitMs: 250,
      timeoutS: 30,
      onProgress: (p) => percents.push(Math.round(p.progress * 100)),
    },
  ).done;
  await dc2.waitResumed("vm1", 5000);
  expect(result).toMatchObject({ vm: "vm1", downtimeMs: -1, transferredBytes: -1 });
  expect(percents[0]).toBe(0);
  expect(percents).toContain(50);
  expect(percents.at(-1)).toBe(100);
  expect(percents).toEqual([...percents].sort((a, b) => a - b));
  expect(await dc1.state("vm1")).toBe("absent"); // "teleported"
  expect(await dc2.state("vm1")).toBe("running");

  const argvs = calls().filter((c) => c.argv[0] !== "showvminfo" && c.argv[0] !== "--version");
  const pw = (c: { argv: string[] }, flag: string) => c.argv[c.argv.indexOf(flag) + 1];
  expect(argvs.map((c) => [c.host, ...c.argv])).toEqual([
    [
      "dc2",
      "modifyvm",
      "vm1",
      "--teleporter",
      "on",
      "--teleporterport",
      "6000",
      "--teleporteraddress",
      "127.0.0.1",
      "--teleporterpasswordfile",
      pw(argvs[0], "--teleporterpasswordfile"),
    ],
    ["dc2", "startvm", "vm1", "--type", "headless"],
    [
      "dc1",
      "controlvm",
      "vm1",
      "teleport",
      "--host",
      "127.0.0.1",
      "--port",
      "6000",
      "--passwordfile",
      pw(argvs[2], "--passwordfile"),
      "--maxdowntime",
      "250",
    ],
  ]);
  expect(argvs[0].passwordFileMode).toBe("600");
  expect(argvs[2].passwordFileMode).toBe("600");
  expect(
    calls()
      .filter((c) => c.argv[0] === "showvminfo")
      .every((c) => c.argv[2] === "--machinereadable"),
  ).toBe(true);
  expect(logged.join("")).toMatch(/teleporterpasswordfile/); // the log does see the commands
  expectSecretNowhere();
});

test(
  "a free port is picked when none is given; disarm powers " + "the waiting VM off and turns the teleporter off",
  async () => {
    const armed = await dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET });
    const { port } = parseTcpUri(armed.uri);
    expect(port).toBeGreaterThan(1024);
    await dc2.disarm("vm1");
    expect(worldState("dc2/vm1")).toBe("poweroff");
    expect(
      calls()
        .slice(-2)
        .map((c) => c.argv),
    ).toEqual([
      ["controlvm", "vm1", "poweroff"],
      ["modifyvm", "vm1", "--teleporter", "off"],
    ]);
    // never disarm a VM that runs
    await expect(dc1.disarm("vm1")).rejects.toMatchObject({ status: 486 });
    expect(worldState("dc1/vm1")).toBe("running");
    expectSecretNowhere();
  },
);

test("no listener: 503 with VirtualBox's own words; the VM keeps running", async () => {
  const err = (await dc1
    .migrate(
      "vm1",
      { uri: "tcp:127.0.0.1:6001", secret: SECRET },
      { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 30 },
    )
    .done.catch((e: unknown) => e)) as TeleportError;
  expect(err).toBeInstanceOf(TeleportError);
  expect(err.status).toBe(503);
  expect(err.details.join("\n")).toMatch(/VERR_NET_CONNECTION_REFUSED/);
  expect(err.details).toContain("the VM keeps running on the source");
  expect(await dc1.state("vm1")).toBe("running");
  expectSecretNowhere();
});

test("a wrong secret is refused by the destination", async () => {
  const armed = await dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET });
  const err = await dc1
    .migrate("vm1", { uri: armed.uri, secret: "wrong" }, { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 30 })
    .done.catch((e: TeleportError) => e);
  expect(err).toMatchObject({ status: 503 });
  expect((err as TeleportError).details.join("\n")).toMatch(/Invalid password/);
  expect(await dc1.state("vm1")).toBe("running");
});

test("destination dies mid-teleport: 503, source running, waitResumed says it did not arrive", async () => {
  process.env.FAKE_VBOX_DIE_AT = "50";
  const armed = await dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET });
  const err = await dc1
    .migrate("vm1", { uri: armed.uri, secret: SECRET }, { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 30 })
    .done.catch((e: TeleportError) => e);
  expect(err).toMatchObject({ status: 503 });
  expect(await dc1.state("vm1")).toBe("running");
  await expect(dc2.waitResumed("vm1", 2000)).rejects.toMatchObject({ status: 503 });
  expect(await dc2.state("vm1")).toBe("absent"); // "aborted"
  expectSecretNowhere();
});

test("abort and timeout cancel through SIGINT: 487 / 504, the VM keeps running", async () => {
  process.env.FAKE_VBOX_STEP_MS = "200";
  const armed = await dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET });
  let started!: () => void;
  const moving = new Promise<void>((r) => (started = r));
  const handle = dc1.migrate(
    "vm1",
    { uri: armed.uri, secret: SECRET },
    {
      bandwidthMbps: 0,
      downtimeLimitMs: 300,
      timeoutS: 30,
      onProgress: (p) => p.progress >= 0.1 && started(),
    },
  );
  await moving;
  await handle.abort();
  await expect(handle.done).rejects.toMatchObject({ status: 487, details: ["the VM keeps running on the source"] });
  expect(worldState("dc1/vm1")).toBe("running");
  const timedOut = dc1.migrate(
    "vm1",
    { uri: armed.uri, secret: SECRET },
    { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 0.5 },
  );
  await expect(timedOut.done).rejects.toMatchObject({ status: 504 });
  expect(worldState("dc1/vm1")).toBe("running");
  await dc2.disarm("vm1");
  expectSecretNowhere();
});

test("what VirtualBox cannot do is said, not faked", async () => {
  const h = dc1.migrate(
    "vm1",
    { uri: "tcp:127.0.0.1:6000", secret: SECRET },
    { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 30, pauseBeforeSwitchover: true },
  );
  await expect(h.done).rejects.toMatchObject({ status: 501 });
  await expect(h.readyToSwitch).rejects.toMatchObject({ status: 501 });
  await expect(dc1.state("ghost")).rejects.toMatchObject({ status: 404 });
  await expect(dc1.arm("vm1", { address: "127.0.0.1", secret: SECRET })).rejects.toMatchObject({ status: 486 });
  expect(() => parseTcpUri("udp:1.2.3.4:5")).toThrow(TeleportError);
  expect(parseTcpUri("tcp:[::1]:6000")).toEqual({ host: "::1", port: 6000 });
});

test("VirtualBox 7 states map onto the driver's", () => {
  expect(
    ["running", "teleporting", "teleportingin", "teleported", "poweroff", "aborted", "saved", "paused"].map(
      vboxRunState,
    ),
  ).toEqual(["running", "running", "incoming", "absent", "absent", "absent", "stopped", "paused"]);
});
