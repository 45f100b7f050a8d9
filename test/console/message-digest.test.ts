/**
 * The MESSAGE trigger with digest (security.users on the console host): a softphone without
 * credentials is challenged, the allowed user is admitted (its command is then judged: here 404,
 * no such plan), another valid user whose name the allowlist does not hold gets 403 whatever its
 * From says. No VM is involved: admission is all this checks.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startConsole, type RunningConsole } from "../../agents/console";
import { parseConfig } from "../../lib/config/load";
import { Host } from "../../lib/hypervisor/host";
import { silentLogger } from "../../lib/log/logger";
import { createSipBackend, type SipJsBackend } from "../../lib/sip";

let base: string;
let sip: SipJsBackend;
let running: RunningConsole;
let target: string;

beforeAll(async () => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), "st-msg-digest-"));
  const config = parseConfig({
    sip: { aor: "sip:dc1@127.0.0.1", listen: [{ transport: "udp", address: "127.0.0.1", port: 0 }] },
    security: { allow: ["sip:ops@*"], users: { ops: "ops-secret", eve: "eve-secret" } },
    console: { http: "127.0.0.1:0" },
    runDir: path.join(base, "run"),
    stateDir: path.join(base, "state"),
  });
  sip = createSipBackend({ aor: config.sip.aor, listen: [{ transport: "udp", host: "127.0.0.1", port: 0 }] });
  running = await startConsole({ config, sip, host: new Host([]), logger: silentLogger });
  await sip.start();
  target = `sip:dc1@127.0.0.1:${sip.listeners[0].port}`;
});

afterAll(async () => {
  await running?.stop();
  await sip?.stop();
  fs.rmSync(base, { recursive: true, force: true });
});

async function send(from: string, credentials?: { username: string; password: string }) {
  const phone = createSipBackend({
    aor: `sip:${from}@127.0.0.1`,
    listen: [{ transport: "udp", host: "127.0.0.1", port: 0 }],
    credentials,
  });
  await phone.start();
  try {
    await phone.message(target, { contentType: "text/plain", content: "migrate nosuchplan to sip:dc2@127.0.0.1" });
    return { status: 202 };
  } catch (err) {
    return err as { status: number; message: string };
  } finally {
    await phone.stop();
  }
}

test("no credentials: 401 challenge; the allowed user: admitted (404 for the unknown plan)", async () => {
  expect((await send("ops")).status).toBe(401);
  expect(await send("ops", { username: "ops", password: "ops-secret" })).toMatchObject({ status: 404 });
  expect((await send("ops", { username: "ops", password: "wrong" })).status).toBe(401);
});

test("a valid user the allowlist does not name gets 403, though its From says ops", async () => {
  expect(await send("ops", { username: "eve", password: "eve-secret" })).toMatchObject({
    status: 403,
    message: expect.stringMatching(/sip:eve@127\.0\.0\.1 \(digest\) from 127\.0\.0\.1 is not in this host's allowlist/),
  });
});
