/**
 * A local account is not an identity. On a hypervisor host every account reaches loopback, so no
 * default trusts it: a destination with the default config refuses an INVITE from 127.0.0.1 (403)
 * and arms nothing; the console wants its token on loopback too, prints the address with the token
 * and leaves the token where only its own user reads it; `config check` names loopback trust; the
 * example deployment trusts no proxy by address. The demo proves dc1 to dc2 with a digest password
 * made per run (agents/commands/demo.ts; `npm run demo` is the quick start).
 */
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { configWarnings } from "../../agents/commands/config";
import { startConsole } from "../../agents/console";
import { loadConfig, parseConfig } from "../../lib/config/load";
import { silentLogger } from "../../lib/log/logger";
import { hostOf } from "../../agents/wiring";
import { guestDefs, pairPerTest, sipBackend } from "../harness";
import { request } from "../console/http";
import { tempDir } from "../sip/helpers";
import { RawSipClient, rawInvite, rawOffer } from "./raw-sip";

const ROOT = path.join(__dirname, "..", "..");

const offer = rawOffer;

describe("the destination's default config", () => {
  const start = pairPerTest();

  it("refuses an INVITE from loopback (403, the reason says how to admit a caller) and arms nothing", async () => {
    const pair = await start(await guestDefs([["router1", "router"]]), { dc2: { security: { allow: [] } } });
    const port = pair.dc2.sip.listeners[0].port;
    const target = `sip:dc2@127.0.0.1:${port}`;
    const raw = await RawSipClient.udp(port);
    try {
      for (const from of ["sip:dc1@127.0.0.1", "sip:root@localhost"]) {
        const inv = rawInvite(target, from, raw.localPort, offer("router1"));
        raw.send(inv.text);
        const r = await raw.final(inv.callId);
        expect(r?.status).toBe(403);
        expect(r?.header("warning")[0]).toMatch(/security\.allow is empty: this host admits no caller/);
      }
      expect(await pair.dc2.host.find("router1")?.driver.state("router1")).toBe("absent"); // no incoming QEMU
    } finally {
      raw.close();
    }
  });
});

describe("the console on loopback", () => {
  it("wants its token, generated when not configured, and keeps it in a file only its user reads", async () => {
    const base = tempDir("local-console");
    const cfg = parseConfig({ host: "dc1", console: { http: "127.0.0.1:0" }, stateDir: path.join(base, "state") });
    const sip = sipBackend(cfg, silentLogger);
    const running = await startConsole({ config: cfg, sip, host: hostOf(cfg, silentLogger), logger: silentLogger });
    try {
      const api = new URL("/api/inventory", running.url).href;
      expect((await request(api, "GET", {})).status).toBe(401);
      expect((await request(api, "GET", { authorization: `Bearer ${running.token}` })).status).toBe(200);
      const file = running.tokenFile as string;
      expect(file).toBe(path.join(base, "state", "console.token"));
      expect(fs.readFileSync(file, "utf8").trim()).toBe(running.token);
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
      // another local account cannot read it (nobody: the unprivileged user every Debian has)
      const other = spawnSync("runuser", ["-u", "nobody", "--", "cat", file], { encoding: "utf8" });
      expect(other.status).not.toBe(0);
      expect(other.stderr).toMatch(/Permission denied/);
    } finally {
      await running.stop();
      fs.rmSync(base, { recursive: true, force: true });
    }
    expect(fs.existsSync(path.join(base, "state", "console.token"))).toBe(false);
  });

  it("prints its address with the token, as a notebook server does", () => {
    const help = execFileSync(process.execPath, [path.join(ROOT, "dist", "agents", "cli.js"), "console", "--help"], {
      encoding: "utf8",
    });
    expect(help).toMatch(/requires a bearer token, on loopback too/);
  });
});

describe("what trusts loopback is named", () => {
  it("config check warns about loopback in security.allow and limits.trustedProxies, not by default", () => {
    const local = (w: string[]) => w.filter((x) => /local account/.test(x));
    expect(local(configWarnings(parseConfig({})))).toEqual([]);
    expect(local(configWarnings(parseConfig({ security: { allow: ["127.0.0.1", "10.0.0.0/8"] } })))).toEqual([
      expect.stringMatching(/^security\.allow admits 127\.0\.0\.1: every local account/),
    ]);
    expect(local(configWarnings(parseConfig({ security: { allow: ["0.0.0.0/0"] } })))).toHaveLength(1);
    expect(local(configWarnings(parseConfig({ limits: { trustedProxies: ["::1"] } })))).toEqual([
      expect.stringMatching(/^limits\.trustedProxies trusts ::1: every local account can assert any/),
    ]);
  });

  it.each(["dc1.json", "dc2.json", "dc2-drachtio.json"])("deploy/config/%s trusts no loopback proxy or caller", (f) => {
    process.env.DRACHTIO_SECRET ??= "test-only";
    const cfg = loadConfig(path.join(ROOT, "deploy", "config", f));
    expect(configWarnings(cfg).filter((w) => /local account/.test(w))).toEqual([]);
    expect(cfg.limits.trustedProxies).toEqual([]);
    expect(Object.keys(cfg.security.users)).toHaveLength(1); // the peer proves itself with digest
  });
});
