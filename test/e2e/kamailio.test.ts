/**
 * exp2 through a real SIP proxy: both agents REGISTER with Kamailio (digest), the source's INVITE
 * to sip:dc2@teleport.test is challenged (407), routed by AOR to the destination, and ACK, INFO and
 * BYE follow the Record-Route set through the proxy. The destination admits dc1 on the
 * P-Asserted-Identity Kamailio sets after authenticating it (the proxy is in trustedProxies), and
 * ignores the very same header from any other address.
 */
import fs from "node:fs";
import type { ChildProcess } from "node:child_process";
import { randomPort } from "../../bench/sipp";
import { ladderSteps } from "../../lib/sip/ladder";
import { tempDir } from "../sip/helpers";
import { DOMAIN, KAMAILIO_USERS, kamailioReady, startKamailio, writeUsers } from "../sip/kamailio-server";
import { buildNrdl, offerDocument } from "../../nrdl";
import { RawSipClient, rawInvite } from "../security/raw-sip";
import {
  bootOnSource,
  expectAllOn,
  guestDefs,
  placement,
  startPair,
  type Pair,
  type Transport,
  SEQUENTIAL,
} from "../harness";

describe.each<Transport>(["udp", "tcp"])("exp2 through Kamailio over %s", (transport) => {
  let dir: string;
  let port: number;
  let kamailio: { child: ChildProcess; log: () => string };
  let pair: Pair;

  beforeAll(async () => {
    dir = tempDir("e2e-kamailio");
    writeUsers(dir);
    port = randomPort();
    kamailio = startKamailio(dir, port);
    await kamailioReady(port);
  });
  afterAll(async () => {
    await pair?.close();
    kamailio.child.kill("SIGTERM");
    await new Promise((r) => kamailio.child.once("exit", r));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("registers both agents, routes the INVITE by AOR with proxy auth, and moves the group", async () => {
    const proxy = `sip:127.0.0.1:${port}${transport === "tcp" ? ";transport=tcp" : ""}`;
    const sipOf = (user: "dc1" | "dc2") => ({
      aor: `sip:${user}@${DOMAIN}`,
      listen: [{ transport, address: "127.0.0.1", port: 0 }],
      outboundProxy: proxy,
      registrar: `sip:${DOMAIN}`,
      credentials: { username: user, password: KAMAILIO_USERS[user] },
    });
    pair = await startPair(
      await guestDefs([
        ["router1", "router"],
        ["video", "server"],
      ]),
      {
        transport,
        dc1: { sip: sipOf("dc1") },
        // no address entry: only the identity the proxy asserts can admit dc1
        dc2: {
          sip: sipOf("dc2"),
          security: { allow: [`sip:dc1@${DOMAIN}`] },
          limits: { trustedProxies: ["127.0.0.1"] },
        },
      },
    );
    await pair.dc1.sip.register();
    await bootOnSource(pair);
    const summary = await pair.dc1.agent.migrate({
      to: `sip:dc2@${DOMAIN}`,
      vms: ["router1", "video"],
      policy: SEQUENTIAL,
    });
    expect(summary.outcome).toBe("completed");
    expect(summary.destinationReport?.outcome).toBe("completed");
    await expectAllOn(pair, "dc2");
    const labels = ladderSteps(pair.dc1.trace).map((s) => s.label.replace(/ \[.*\]$/, ""));
    expect(labels).toEqual(
      expect.arrayContaining([
        "407 Proxy Authentication Required (INVITE)",
        "200 OK (INVITE)",
        "ACK",
        "INFO",
        "BYE",
        "200 OK (BYE)",
      ]),
    );
    // every in-dialog request went to the proxy (Record-Route), never straight to dc2
    const dc2Port = pair.dc2.sip.listeners[0].port;
    const inDialog = pair.dc1.trace.filter((e) => e.direction === "sent" && /^(ACK|INFO|BYE) /.test(e.message));
    expect(inDialog.length).toBeGreaterThan(2);
    for (const e of inDialog) expect([e.peer?.port, e.peer?.port === dc2Port]).toEqual([port, false]);
    expect(pair.dc1.trace.some((e) => /^INFO /.test(e.message) && /^Route:.*lr/im.test(e.message))).toBe(true);
    const invite = pair.dc2.trace.find((e) => e.direction === "received" && e.message.startsWith("INVITE "));
    expect(invite?.message).toMatch(new RegExp(`^P-Asserted-Identity: <sip:dc1@${DOMAIN}>`, "m"));
  });

  it("ignores P-Asserted-Identity from an address that is not a trusted proxy: 403, nothing armed", async () => {
    const dc2Port = pair.dc2.sip.listeners[0].port;
    const target = `sip:dc2@127.0.0.1:${dc2Port}`;
    const before = placement(pair);
    const raw = await (transport === "tcp" ? RawSipClient.tcp : RawSipClient.udp)(dc2Port, "127.0.0.1", "127.0.0.2");
    try {
      const offer = buildNrdl(
        offerDocument({
          id: "mig-forged-pai",
          sourceUri: `sip:dc1@${DOMAIN}`,
          destinationUri: target,
          vms: [{ name: "router1", memoryMib: 96 }],
        }),
      );
      const forged = rawInvite(
        target,
        `sip:dc1@${DOMAIN}`,
        raw.localPort,
        offer,
        [`P-Asserted-Identity: <sip:dc1@${DOMAIN}>`],
        transport.toUpperCase(),
      );
      raw.send(forged.text);
      const refused = await raw.final(forged.callId);
      expect(refused?.status).toBe(403);
      expect(refused?.header("warning")[0]).toMatch(/no proven identity from 127\.0\.0\.2/);
    } finally {
      raw.close();
    }
    expect(placement(pair)).toEqual(before);
  });
});
