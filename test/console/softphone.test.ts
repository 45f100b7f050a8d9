/**
 * A real softphone triggers a real migration: baresip, registered with Kamailio as ops, sends the
 * console's MESSAGE "migrate exp2 to sip:dc2@teleport.test"; Kamailio authenticates it (digest)
 * and asserts its identity (P-Asserted-Identity) to the console, which trusts that header only
 * from the proxy and admits ops alone. router1 and video move to dc2 (QEMU, both agents behind
 * Kamailio) and the outcome comes back to baresip as a MESSAGE. eve, registered with Kamailio
 * like ops but not in the console's allowlist, is refused; dialling the console like a phone gets the 415 that
 * says what to send instead.
 */
import fs from "node:fs";
import type { ChildProcess } from "node:child_process";
import type { HistoryEntry } from "../../agents/console/history";
import { startConsole, type RunningConsole } from "../../agents/console";
import { randomPort } from "../../bench/sipp";
import { silentLogger } from "../../lib/log/logger";
import { NOT_A_PHONE, NOT_A_PHONE_REASON } from "../../lib/sip/not-a-phone";
import { startSoftphone, type Softphone } from "../sip/baresip";
import { tempDir } from "../sip/helpers";
import { DOMAIN, KAMAILIO_USERS, kamailioReady, startKamailio, writeUsers } from "../sip/kamailio-server";
import { bootOnSource, expectAllOn, guestDefs, placement, startPair, type Pair } from "../harness";
import { apiClient } from "./http";

jest.setTimeout(120_000);

const PHONE_USERS = { ops: "ops-desk-pw", eve: "eve-desk-pw" };

let dir: string;
let kamailio: { child: ChildProcess; log: () => string };
let pair: Pair;
let consoleRunning: RunningConsole;
let phone: Softphone;

beforeAll(async () => {
  dir = tempDir("softphone");
  writeUsers(dir, { ...KAMAILIO_USERS, ...PHONE_USERS });
  const port = randomPort();
  kamailio = startKamailio(dir, port);
  await kamailioReady(port);
  const sip = (user: "dc1" | "dc2") => ({
    aor: `sip:${user}@${DOMAIN}`,
    listen: [{ transport: "udp", address: "127.0.0.1", port: 0 }],
    outboundProxy: `sip:127.0.0.1:${port}`,
    registrar: `sip:${DOMAIN}`,
    credentials: { username: user, password: KAMAILIO_USERS[user] },
  });
  // Everyone is on 127.0.0.1: no address entry anywhere, only identities the proxy asserts admit.
  const trusted = { trustedProxies: ["127.0.0.1"] };
  pair = await startPair(
    await guestDefs([
      ["router1", "router"],
      ["video", "server"],
    ]),
    {
      dc1: {
        sip: sip("dc1"),
        security: { allow: [`sip:ops@${DOMAIN}`], destinations: [`sip:dc2@${DOMAIN}`] },
        limits: trusted,
        console: { http: "127.0.0.1:0" },
      },
      dc2: { sip: sip("dc2"), security: { allow: [`sip:dc1@${DOMAIN}`] }, limits: trusted },
    },
  );
  consoleRunning = await startConsole({
    config: pair.dc1.cfg,
    sip: pair.dc1.sip,
    host: pair.dc1.host,
    logger: silentLogger,
  });
  await pair.dc1.sip.register();
  await bootOnSource(pair);
  phone = await startSoftphone({
    dir,
    accounts: PHONE_USERS,
    domain: DOMAIN,
    proxyPort: port,
    contacts: [`sip:dc1@${DOMAIN}`],
  });
});

afterAll(async () => {
  await phone?.stop();
  await consoleRunning?.stop();
  await pair?.close();
  kamailio?.child.kill("SIGTERM");
  if (kamailio) await new Promise((r) => kamailio.child.once("exit", r));
  fs.rmSync(dir, { recursive: true, force: true });
});

test("eve, registered but not in the console's allowlist, is refused and nothing moves", async () => {
  const from = phone.output().length;
  phone.type(`/uafind sip:eve@${DOMAIN}`);
  phone.type(`/message migrate exp2 to sip:dc2@${DOMAIN}`);
  await phone.waitFor(/403 Forbidden/, 15_000, from);
  // the console refused it (not the proxy), on the identity Kamailio asserted
  const refusal = pair.dc1.trace.find((e) => e.direction === "sent" && e.message.startsWith("SIP/2.0 403"));
  expect(refusal?.message).toMatch(
    /^Warning: 399 \S+ "Forbidden; sip:eve@teleport\.test \(proxy\) .*not in this host's allowlist/m,
  );
  expect(placement(pair)).toEqual({ router1: ["dc1"], video: ["dc1"] });
  expect(consoleRunning.line.snapshot().phase).toBe("idle");
});

test("ops's MESSAGE moves exp2 to dc2 and the outcome comes back to the softphone", async () => {
  const from = phone.output().length;
  phone.type(`/uafind sip:ops@${DOMAIN}`);
  phone.type(`/message migrate exp2 to sip:dc2@${DOMAIN}`);
  // what baresip shows for an incoming MESSAGE: `PEER: "TEXT"`
  const vm = (name: string) => String.raw`${name} completed \(downtime \d+ ms\)`;
  const outcome = new RegExp(
    String.raw`sip:dc1@teleport\.test: "completed mig-[0-9a-f]+: ${vm("router1")}, ${vm("video")}"`,
  );
  await phone.waitFor(outcome, 90_000, from);
  await expectAllOn(pair, "dc2");
  const { dialogs } = (
    await apiClient(consoleRunning.url, consoleRunning.token).get<{ dialogs: HistoryEntry[] }>("/api/history")
  ).body;
  // the history names the identity Kamailio asserted, proven by where it came from
  expect(dialogs).toEqual([expect.objectContaining({ by: `sip:ops@${DOMAIN}`, outcome: "completed" })]);
});

test("calling the console like a phone gets 415 with what to send instead", async () => {
  const from = phone.output().length;
  phone.type(`/dial sip:dc1@${DOMAIN}`);
  await phone.waitFor(new RegExp(`415 ${NOT_A_PHONE_REASON.replace(/[.:]/g, "\\$&")}`), 15_000, from);
  // and the whole sentence went with it, for phones that show a Warning
  const refusal = pair.dc1.trace.find((e) => e.direction === "sent" && e.message.startsWith("SIP/2.0 415"));
  expect(refusal?.message).toContain(NOT_A_PHONE);
});
