/**
 * The From header proves nothing. A stranger in a network namespace of its own (a real,
 * non-loopback address) writes an allowed identity into From and P-Asserted-Identity with sipp:
 * its INVITE to the destination and its MESSAGE trigger to the console are refused 403, nothing
 * is armed and nothing moves. The configs make the forged identity the only thing missing: the
 * allowlists name it (provable through a trusted proxy the stranger is not), the console's
 * destination is permitted and would admit the console's own INVITE.
 */
import path from "node:path";
import { startConsole, type RunningConsole } from "../../agents/console";
import { sipOf } from "../../agents/wiring";
import type { HostConfig } from "../../lib/config/schema";
import { silentLogger } from "../../lib/log/logger";
import type { AgentSip } from "../../agents/wiring";
import { randomPort } from "../../bench/sipp";
import { bootOnSource, guestDefs, placement, startPair, type Pair } from "../harness";
import { FIXTURES } from "../sip/helpers";
import { StrangerNet } from "./netns";

const asRoot = process.getuid?.() === 0 ? describe : describe.skip;
jest.setTimeout(120_000);

/** Not the stranger: the only address whose P-Asserted-Identity would count. */
const PROXY = "192.0.2.250";

asRoot("a forged From from another host", () => {
  let net: StrangerNet;
  let pair: Pair;
  let dc2Uri: string;

  beforeAll(async () => {
    net = await StrangerNet.create();
    pair = await startPair(await guestDefs([["router1", "router"]]), {
      dc2: {
        sip: { listen: [{ transport: "udp", address: net.hostAddress, port: 0 }] },
        security: { allow: ["sip:dc1@ops.example", `${net.hostAddress}/32`] },
        limits: { trustedProxies: [PROXY] },
      },
    });
    dc2Uri = `sip:dc2@${net.hostAddress}:${pair.dc2.sip.listeners[0].port}`;
  });
  afterAll(async () => {
    await pair?.close();
    await net?.destroy();
  });

  const sipp = (scenario: string, target: string, service: string, vars: Record<string, string>) =>
    net.run("sipp", [
      "-sf",
      path.join(FIXTURES, "sipp", scenario),
      target,
      "-s",
      service,
      "-i",
      net.strangerAddress,
      "-p",
      String(randomPort()),
      ...Object.entries(vars).flatMap(([k, v]) => ["-set", k, v]),
      "-m",
      "1",
      "-timeout",
      "20s",
      "-timeout_error",
      "-nostdin",
    ]);

  it("INVITE: 403 and no listener armed", async () => {
    const target = `${net.hostAddress}:${pair.dc2.sip.listeners[0].port}`;
    const r = await sipp("forged-invite.xml", target, "dc2", { from: "dc1@ops.example", vm: "router1" });
    expect({ code: r.code, output: r.code === 0 ? "" : r.output }).toEqual({ code: 0, output: "" });
    expect(placement(pair).router1).toEqual([]);
    const refusal = pair.dc2.trace.find((e) => e.direction === "sent" && e.message.startsWith("SIP/2.0 403"));
    expect(refusal?.peer?.address).toBe(net.strangerAddress);
    expect(refusal?.message).toMatch(/no proven identity from 10\.[\d.]+ \(From sip:dc1@ops\.example proves nothing/);
  });

  describe("MESSAGE trigger", () => {
    let console: RunningConsole;
    let sip: AgentSip;
    beforeAll(async () => {
      await bootOnSource(pair);
      const base = pair.dc1.cfg;
      const cfg: HostConfig = {
        ...base,
        sip: {
          ...base.sip,
          aor: `sip:dc1@${net.hostAddress}`,
          listen: [{ transport: "udp", address: net.hostAddress, port: 0 }],
        },
        security: { ...base.security, allow: ["sip:ops@*"], destinations: [dc2Uri] },
        limits: { ...base.limits, trustedProxies: [PROXY] },
        console: { ...base.console, http: "127.0.0.1:0", plans: { solo: { vms: ["router1"] } } },
      };
      sip = sipOf(cfg, silentLogger);
      console = await startConsole({ config: cfg, sip, host: pair.dc1.host, logger: silentLogger });
      await sip.start();
    });
    afterAll(async () => {
      await console?.stop();
      await sip?.stop();
    });

    it("403 and nothing moves", async () => {
      const target = `${net.hostAddress}:${sip.listeners[0].port}`;
      const r = await sipp("message-refused.xml", target, "dc1", { from: "ops", cmd: `migrate solo to ${dc2Uri}` });
      expect({ code: r.code, output: r.code === 0 ? "" : r.output }).toEqual({ code: 0, output: "" });
      await new Promise((resolve) => setTimeout(resolve, 1000)); // a wrongly started move would be under way by now
      expect(console.line.snapshot().phase).toBe("idle");
      expect(placement(pair).router1).toEqual(["dc1"]);
    });
  });
});
