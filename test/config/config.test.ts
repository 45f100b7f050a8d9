import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { configWarnings } from "../../agents/commands/config";
import { configProblems, loadConfig, parseConfig } from "../../lib/config/load";

describe("host configuration", () => {
  it("works with no file at all: loopback defaults", () => {
    const cfg = loadConfig();
    expect(cfg.sip.listen).toEqual([
      { transport: "udp", address: "127.0.0.1", port: 5060 },
      { transport: "tcp", address: "127.0.0.1", port: 5060 },
    ]);
    expect(cfg.defaults).toMatchObject({ strategy: "sequential", downtimeLimitMs: 300, onError: "abort" });
    expect(cfg.security.users).toEqual({});
  });

  it("reports every problem with its path", () => {
    const problems = configProblems({
      sip: { aor: "dc2@host", listen: [{ transport: "sctp" }] },
      migration: { ports: "80-90" },
      bogus: 1,
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^sip\.aor: expected a SIP URI/),
        expect.stringMatching(/^sip\.listen\.0\.transport: /),
        expect.stringMatching(/^migration\.ports: expected 1024 <= low/),
        expect.stringMatching(/bogus/),
      ]),
    );
    expect(problems).toHaveLength(4);
  });

  it("takes a T1 for the sipjs backend, refuses one with drachtio and one out of range", () => {
    expect(parseConfig({ sip: { timerT1Ms: 100 } }).sip.timerT1Ms).toBe(100);
    expect(parseConfig({}).sip.timerT1Ms).toBe(500);
    const drachtio = { host: "127.0.0.1", port: 9022, secretEnv: "X" };
    expect(configProblems({ sip: { backend: "drachtio", drachtio, timerT1Ms: 100 } })).toEqual([
      expect.stringMatching(/^sip\.timerT1Ms: .*drachtio-server's own config/),
    ]);
    expect(configProblems({ sip: { timerT1Ms: 5 } })).toEqual([expect.stringMatching(/^sip\.timerT1Ms: /)]);
  });

  it("resolves relative paths against the config file's folder", () => {
    const dir = mkdtempSync(join(tmpdir(), "st-config-"));
    const file = join(dir, "dc2.json");
    writeFileSync(file, JSON.stringify({ runDir: "run", inventory: "vms.json" }));
    const cfg = loadConfig(file);
    expect(cfg.runDir).toBe(join(dir, "run"));
    expect(cfg.inventory).toBe(join(dir, "vms.json"));
  });

  it("says which file is not JSON", () => {
    const dir = mkdtempSync(join(tmpdir(), "st-config-"));
    const file = join(dir, "broken.json");
    writeFileSync(file, "{ sip: ");
    expect(() => loadConfig(file)).toThrow(/broken\.json is not valid JSON/);
  });

  it("defaults.compress: auto unless set; a method name it does not know is a problem", () => {
    expect(parseConfig({}).defaults.compress).toBe("auto");
    expect(parseConfig({ defaults: { compress: "none" } }).defaults.compress).toBe("none");
    expect(() => parseConfig({ defaults: { compress: "lz4" } })).toThrow(/defaults\.compress/);
  });

  it("defaults.dedup: auto unless set; migration.dedupIndexPages 65536 unless set, 0 for none", () => {
    const cfg = parseConfig({});
    expect([cfg.defaults.dedup, cfg.migration.dedupIndexPages]).toEqual(["auto", 65_536]);
    expect(parseConfig({ defaults: { dedup: "off" }, migration: { dedupIndexPages: 0 } })).toMatchObject({
      defaults: { dedup: "off" },
      migration: { dedupIndexPages: 0 },
    });
    expect(() => parseConfig({ defaults: { dedup: "yes" } })).toThrow(/defaults\.dedup/);
    expect(() => parseConfig({ migration: { dedupIndexPages: -1 } })).toThrow(/migration\.dedupIndexPages/);
  });

  it("libvirt.stream: native unless set; tunnelled may be chosen, nothing else", () => {
    expect(parseConfig({}).libvirt.stream).toBe("native");
    expect(parseConfig({ libvirt: { stream: "tunnelled" } }).libvirt.stream).toBe("tunnelled");
    expect(() => parseConfig({ libvirt: { stream: "rdma" } })).toThrow(/libvirt\.stream/);
  });

  it("throws a 500 TeleportError listing the problems", () => {
    expect(() => parseConfig({ defaults: { strategy: "teleport" } })).toThrow(
      /invalid configuration: defaults\.strategy/,
    );
  });
});

describe("config check: destinations reached without TLS", () => {
  it("warns per destination whose first hop is not TLS or whose certificate is not verified", () => {
    const tls = { cert: "c.pem", key: "k.pem", ca: "ca.pem" };
    const cfg = (sip: Record<string, unknown>, destinations: string[]) =>
      parseConfig({ sip: { ...sip }, security: { destinations } });
    expect(configWarnings(cfg({}, ["sip:dc2@10.0.0.2"]))).toEqual([
      "sip:dc2@10.0.0.2 is reached without TLS: nothing proves the peer is the real destination " +
        "(use ;transport=tls and sip.tls.ca to verify its certificate)",
    ]);
    expect(configWarnings(cfg({ tls }, ["sip:dc2@dc2.example;transport=tls"]))).toEqual([]);
    expect(configWarnings(cfg({ tls: { ...tls, verify: false } }, ["sip:dc2@dc2.example;transport=tls"]))).toEqual([
      "sip:dc2@dc2.example;transport=tls is reached over TLS with sip.tls.verify false: its certificate is not checked",
    ]);
    const drachtio = { backend: "drachtio", drachtio: { host: "127.0.0.1", port: 9022, secretEnv: "S" } };
    expect(configWarnings(cfg(drachtio, ["sip:dc2@dc2.example;transport=tls"]))).toEqual([
      "sip:dc2@dc2.example;transport=tls is reached over TLS made by drachtio-server: sip.tls (ca, verify) does " +
        "not apply, and the agent cannot see whether the server checked the destination's certificate",
    ]);
    expect(configWarnings(cfg({ outboundProxy: "sip:10.0.0.5" }, ["sip:dc2@ops.example"]))).toEqual([
      "sip:dc2@ops.example is reached through sip.outboundProxy sip:10.0.0.5 without TLS: nothing proves the peer " +
        "is the real destination (use ;transport=tls on the proxy URI and sip.tls.ca to verify its certificate)",
    ]);
  });
});
