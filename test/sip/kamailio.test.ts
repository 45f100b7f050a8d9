/**
 * Both agents REGISTER with Kamailio (digest auth), dc1 calls dc2 by AOR through it with proxy
 * authentication, and ACK/INFO/BYE follow the Record-Route set. Kamailio runs in the
 * foreground on random loopback ports with the deployment's config file.
 */
import fs from "node:fs";
import { Writable } from "node:stream";
import winston from "winston";
import type { SipJsBackend } from "../../lib/sip";
import { randomPort } from "../../bench/sipp";
import { NRDL, OFFER, answerEverything, startAgent, tempDir } from "./helpers";
import { DOMAIN, KAMAILIO_USERS, kamailioReady, startKamailio, writeUsers } from "./kamailio-server";

const USERS = KAMAILIO_USERS;

/** Trace lines of one agent, captured from its winston logger. */
function tracingLogger(): { logger: winston.Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = winston.createLogger({
    level: "info",
    transports: [
      new winston.transports.Stream({
        stream: new Writable({
          write(c, _e, cb) {
            lines.push(JSON.parse(String(c)).message);
            cb();
          },
        }),
      }),
    ],
  });
  return { logger, lines };
}

async function until(done: () => boolean, ms = 3000): Promise<void> {
  for (const end = Date.now() + ms; !done();) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("through Kamailio with registrar, digest auth and record-route", () => {
  let dir: string;
  let kamailio: ReturnType<typeof startKamailio>;
  let port: number;
  const agents: SipJsBackend[] = [];

  beforeAll(async () => {
    dir = tempDir("kamailio");
    writeUsers(dir);
    port = randomPort();
    kamailio = startKamailio(dir, port);
    await kamailioReady(port);
  });
  afterAll(async () => {
    for (const a of agents) await a.stop();
    kamailio.child.kill("SIGTERM");
    await new Promise((r) => kamailio.child.once("exit", r));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function agent(user: keyof typeof USERS, kind: "udp" | "tcp", logger?: winston.Logger): Promise<SipJsBackend> {
    const a = await startAgent(user, ["udp", "tcp"], {
      aor: `sip:${user}@${DOMAIN}`,
      outboundProxy: `sip:127.0.0.1:${port}${kind === "tcp" ? ";transport=tcp" : ""}`,
      credentials: { username: user, password: USERS[user] },
      sipTrace: logger !== undefined,
      logger,
    });
    agents.push(a);
    return a;
  }

  it("registers both agents and routes an authenticated NRDL call by AOR along the route set", async () => {
    const trace = tracingLogger();
    const dc1 = await agent("dc1", "udp", trace.logger);
    const dc2 = await agent("dc2", "tcp");
    // Kamailio takes a moment to bind; OPTIONS is the health check.
    for (let i = 0; ; i++) {
      try {
        await dc1.options(`sip:127.0.0.1:${port}`);
        break;
      } catch (err) {
        if (i > 50) throw new Error(`kamailio did not answer: ${String(err)}\n${kamailio.log()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await dc1.register();
    await dc2.register();
    const seen = answerEverything(dc2);

    const { dialog } = await dc1.invite(`sip:dc2@${DOMAIN}`, { contentType: NRDL, content: OFFER }).established;
    // Kamailio's workers may reorder ACK and a quick INFO: let the ACK land first.
    await until(() => seen.acks === 1);
    expect((await dialog.info({ contentType: NRDL, content: "<status/>" })).status).toBe(200);
    expect((await dialog.bye()).status).toBe(200);
    expect(seen).toEqual({ invites: 1, acks: 1, infos: 1, byes: 1, ended: 1 });

    const sent = trace.lines.filter((l) => l.startsWith("sip sent"));
    const first = (method: string): string => sent.find((l) => l.split("\n")[1].startsWith(`${method} `)) ?? "";
    // 401 on REGISTER, 407 on INVITE, each answered with masked credentials.
    expect(trace.lines.some((l) => l.includes("SIP/2.0 401"))).toBe(true);
    expect(trace.lines.some((l) => l.includes("SIP/2.0 407"))).toBe(true);
    expect(sent.some((l) => /Proxy-Authorization: Digest <masked>/.test(l))).toBe(true);
    expect(trace.lines.join("\n")).not.toContain(USERS.dc1);
    // In-dialog requests go to the proxy with the Record-Route set as Route.
    for (const method of ["ACK", "INFO", "BYE"]) {
      expect(first(method)).toContain(`sip sent udp 127.0.0.1:${port}`);
      expect(first(method)).toMatch(new RegExp(`\\r\\nRoute: <sip:127\\.0\\.0\\.1:${port};[^>]*lr`));
    }

    await dc1.unregister();
    await expect(
      dc2.invite(`sip:dc1@${DOMAIN}`, { contentType: NRDL, content: OFFER }).established,
    ).rejects.toMatchObject({ status: 404 });
  }, 30000);

  it("refreshes its registration before it expires", async () => {
    const trace = tracingLogger();
    const a = await startAgent("dc1", ["udp"], {
      aor: `sip:dc1@${DOMAIN}`,
      outboundProxy: `sip:127.0.0.1:${port}`,
      credentials: { username: "dc1", password: USERS.dc1 },
      registerExpires: 2,
      sipTrace: true,
      logger: trace.logger,
    });
    agents.push(a);
    await a.register();
    const accepted = (): number =>
      trace.lines.filter(
        (l) =>
          l.startsWith("sip received") &&
          /^SIP\/2\.0 200 OK[\s\S]*CSeq: \d+ REGISTER/.test(l.split("\n").slice(1).join("\n")),
      ).length;
    expect(accepted()).toBe(1);
    await until(() => accepted() >= 2, 4000);
    await a.unregister();
  });

  it.each([
    ["a wrong password", { username: "dc1", password: "wrong" }],
    ["a challenge from another realm", { username: "dc1", password: USERS.dc1, realm: "elsewhere" }],
  ])("gets 401 with %s", async (_what, credentials) => {
    const a = await startAgent("dc1", ["udp"], {
      aor: `sip:dc1@${DOMAIN}`,
      outboundProxy: `sip:127.0.0.1:${port}`,
      credentials,
    });
    agents.push(a);
    await expect(a.register()).rejects.toMatchObject({ status: 401 });
  });
});
