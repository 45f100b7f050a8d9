import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

  it("throws a 500 TeleportError listing the problems", () => {
    expect(() => parseConfig({ defaults: { strategy: "teleport" } })).toThrow(
      /invalid configuration: defaults\.strategy/,
    );
  });
});
