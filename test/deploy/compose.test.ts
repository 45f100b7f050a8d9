/**
 * docker-compose.yml as docker-compose itself reads it (no engine runs here, nothing is built):
 * the proxy mounts the very kamailio.cfg the SIP tests start Kamailio with, and each agent's
 * config file passes `config check` (schema, inventory, hypervisor; images may be absent in CI).
 */
import fs from "node:fs";
import path from "node:path";
import execa from "execa";
import { checkConfig } from "../../agents/commands/config";
import { KAMAILIO_CFG } from "../sip/kamailio-server";

const ROOT = path.join(__dirname, "..", "..");

interface Service {
  command?: string[];
  entrypoint?: string[];
  profiles?: string[];
  environment?: Record<string, string | null>;
  image?: string;
  volumes?: string[];
  devices?: string[];
  network_mode?: string;
  build?: { target?: string };
}

/** The effective compose model, via `docker-compose config` and PyYAML (a docker-compose dependency). */
async function composeModel(): Promise<{ services: Record<string, Service> }> {
  const { stdout } = await execa("docker-compose", ["-f", path.join(ROOT, "docker-compose.yml"), "config"], {
    cwd: ROOT,
  });
  const json = await execa("python3", ["-c", "import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"], {
    input: stdout,
  });
  return JSON.parse(json.stdout) as { services: Record<string, Service> };
}

/** Host path mounted at `target` in a service ("SRC:TARGET[:MODE]" after docker-compose resolved it). */
function mountedAt(svc: Service, target: string): string | undefined {
  const v = (svc.volumes ?? []).map((m) => m.split(":")).find(([, t]) => t === target);
  return v?.[0];
}

function configArg(svc: Service): string {
  const cmd = svc.command ?? [];
  return cmd[cmd.indexOf("--config") + 1];
}

describe("docker-compose.yml", () => {
  let services: Record<string, Service>;
  beforeAll(async () => {
    services = (await composeModel()).services;
  });

  it("has the proxy, both agents and the console; the drachtio profile adds drachtio-server and a dc2 on it", () => {
    const byDefault = Object.keys(services).filter((n) => !services[n].profiles?.length);
    expect(byDefault.sort()).toEqual(["console", "dc1", "dc2", "proxy"]);
    const drachtio = Object.keys(services).filter((n) => services[n].profiles?.includes("drachtio"));
    expect(drachtio.sort()).toEqual(["dc2-drachtio", "drachtio"]);
    expect(services.drachtio.image).toBe("drachtio/drachtio-server:0.9.4");
    // the admin secret comes from the environment at start, never from this file
    for (const n of drachtio) expect(services[n].environment).toEqual({ DRACHTIO_SECRET: null });
    expect(services.drachtio.entrypoint?.join(" ")).toMatch(/--port 9022 --secret "\$\$\{DRACHTIO_SECRET:\?/);
    const cfg = JSON.parse(fs.readFileSync(path.join(ROOT, "deploy", "config", "dc2-drachtio.json"), "utf8"));
    expect(cfg.sip.drachtio).toEqual({ host: "127.0.0.1", port: 9022, secretEnv: "DRACHTIO_SECRET" });
    expect(configArg(services["dc2-drachtio"])).toBe("/etc/sip-teleport/dc2-drachtio.json");
  });

  it("dc2-drachtio's config is valid; config check misses only the server (its own container)", async () => {
    process.env.DRACHTIO_SECRET ??= "test-only";
    const problems = await checkConfig(path.join(ROOT, "deploy", "config", "dc2-drachtio.json"), { images: false });
    expect(problems).toEqual([
      expect.stringMatching(/^sip\.drachtio: drachtio-server does not answer: 127\.0\.0\.1:9022/),
    ]);
  });

  it("mounts the Kamailio config the test suite runs", () => {
    const cfg = mountedAt(services.proxy, "/etc/kamailio/kamailio.cfg");
    expect(cfg && path.resolve(cfg)).toBe(path.resolve(KAMAILIO_CFG));
    const db = mountedAt(services.proxy, "/etc/kamailio/db");
    expect(db && fs.readFileSync(path.join(db, "subscriber"), "utf8")).toMatch(/^\d+:dc1:/m);
  });

  it.each(["dc1", "dc2", "console"])(
    "runs %s on the host's network with KVM, taps, the run dir and a valid config",
    async (name) => {
      const svc = services[name];
      expect(svc.network_mode).toBe("host");
      expect(svc.build?.target).toBe("agent");
      expect(svc.devices).toEqual(expect.arrayContaining(["/dev/kvm:/dev/kvm", "/dev/net/tun:/dev/net/tun"]));
      expect(mountedAt(svc, "/run/sip-teleport")).toBe("/run/sip-teleport");
      const etc = mountedAt(svc, "/etc/sip-teleport");
      expect(etc).toBeDefined();
      const file = path.join(etc as string, path.relative("/etc/sip-teleport", configArg(svc)));
      expect(await checkConfig(file, { images: false })).toEqual([]);
    },
  );

  it("agents register with the proxy under their own AOR and accept only the peer", () => {
    const dc = (n: string) => JSON.parse(fs.readFileSync(path.join(ROOT, "deploy", "config", `${n}.json`), "utf8"));
    for (const [me, peer] of [
      ["dc1", "dc2"],
      ["dc2", "dc1"],
    ]) {
      const cfg = dc(me);
      expect(cfg.sip.aor).toBe(`sip:${me}@teleport.example`);
      expect(cfg.sip.registrar).toBe(cfg.sip.outboundProxy);
      expect(cfg.security.allow).toEqual([`sip:${peer}@teleport.example`]);
    }
    expect(dc("dc1").migration.ports).not.toBe(dc("dc2").migration.ports);
  });
});

describe("Dockerfile (not built here: no Docker engine)", () => {
  const lines = fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8").split("\n");

  it("has every stage docker-compose.yml builds", () => {
    const stages = lines.flatMap((l) => /^FROM \S+ AS (\S+)/.exec(l)?.[1] ?? []);
    expect(stages).toEqual(expect.arrayContaining(["build", "agent", "proxy"]));
  });

  it("copies only files that exist, and everything the build compiles", () => {
    const sources = lines.flatMap((l) => /^COPY (?!--from)(.+) \S+$/.exec(l)?.[1].split(/\s+/) ?? []);
    expect(sources.filter((s) => !fs.existsSync(path.join(ROOT, s)))).toEqual([]);
    const build = JSON.parse(fs.readFileSync(path.join(ROOT, "tsconfig.build.json"), "utf8")) as { include: string[] };
    expect(sources).toEqual(
      expect.arrayContaining([
        ...build.include,
        "tsconfig.json",
        "tsconfig.build.json",
        "package-lock.json",
        "test/testbed",
      ]),
    );
  });
});

describe("the example host configs", () => {
  it(
    "name the VM images they need: config check reports each " + "missing file unless told images are elsewhere",
    async () => {
      const file = path.join(ROOT, "deploy", "config", "dc2.json");
      const problems = await checkConfig(file);
      // CI machines do not hold /var/lib/sip-teleport/images; an operator's host does.
      if (fs.existsSync("/var/lib/sip-teleport/images/vmlinuz")) return expect(problems).toEqual([]);
      expect(problems).toEqual(
        expect.arrayContaining(["inventory: vm router1: kernel /var/lib/sip-teleport/images/vmlinuz does not exist"]),
      );
      expect(await checkConfig(file, { images: false })).toEqual([]);
    },
  );
});
