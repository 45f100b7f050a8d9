/**
 * SIP devices as triggers (RFC 3428), with sipp as the softphone: an allowed sender's MESSAGE
 * "migrate solo to URI" moves router1 for real (QEMU, destination agent on loopback) and the
 * outcome comes back in a MESSAGE; a stranger gets 403 (whatever its From says), nonsense gets
 * 400/404, a destination outside security.destinations 403.
 */
import fs from "node:fs";
import path from "node:path";
import type { HistoryEntry } from "../../agents/console/history";
import { silentLogger } from "../../lib/log/logger";
import { createSipBackend } from "../../lib/sip";
import { randomPort } from "../../bench/sipp";
import { FIXTURES, runSipp } from "../sip/helpers";
import { apiClient } from "./http";
import { startStack, type Stack } from "./stack";

jest.setTimeout(120_000);

let stack: Stack;

/** Run a scenario once (UAC towards the console's agent, or UAS on `port`); `log` is what it logged (<log>). */
async function sipp(scenario: string, vars: Record<string, string>, port?: number, local = "127.0.0.1") {
  const sets = Object.entries(vars).flatMap(([k, v]) => ["-set", k, v]);
  const logFile = path.join(stack.base, `sipp-${scenario}.log`);
  const role = port === undefined ? [stack.source.uri.replace(/^sip:[^@]+@/, "")] : [];
  const args = ["-sf", path.join(FIXTURES, "sipp", scenario), "-s", "dc1", ...sets, "-m", "1", "-i", local];
  const r = await runSipp([
    ...args,
    ...(port === undefined ? [] : ["-p", String(port)]),
    "-trace_logs",
    "-log_file",
    logFile,
    ...role,
  ]);
  return { ...r, log: fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8") : "" };
}

beforeAll(async () => {
  // Senders on 127.0.0.1 are allowed by address; 127.0.0.2 is a stranger on the same machine.
  stack = await startStack({ vms: ["router1"], allow: ["127.0.0.1"], plans: { solo: { vms: ["router1"] } } });
  await stack.boot("router1");
});

afterAll(async () => {
  await stack?.close();
});

test("a sender outside the allowlist gets 403 and nothing moves", async () => {
  const cmd = `migrate solo to ${stack.dest.uri}`;
  const r = await sipp("message-refused.xml", { from: "ops", cmd }, undefined, "127.0.0.2");
  expect(r).toMatchObject({ code: 0, successful: 1, failed: 0 });
  expect(await stack.whereRuns("router1")).toEqual(["dc1"]);
});

test("an allowed sender naming a destination outside security.destinations gets 403 and nothing moves", async () => {
  const r = await sipp("message-refused.xml", { from: "ops", cmd: "migrate solo to sip:dc9@192.0.2.66" });
  expect(r).toMatchObject({ code: 0, successful: 1, failed: 0 });
  expect(r.log).toMatch(/refused: +399 sip-teleport "sip:dc9@192\.0\.2\.66 is not a permitted destination/);
  expect(stack.console.line.snapshot().phase).toBe("idle");
  expect(await stack.whereRuns("router1")).toEqual(["dc1"]);
});

test("an allowed sender is told what is wrong with a command: 400 not a command, 404 no such plan", async () => {
  const phone = createSipBackend({
    aor: "sip:ops@127.0.0.1",
    listen: [{ transport: "udp", host: "127.0.0.1", port: 0 }],
    logger: silentLogger,
  });
  await phone.start();
  try {
    const send = (content: string) => phone.message(stack.source.uri, { contentType: "text/plain", content });
    await expect(send("please move everything")).rejects.toMatchObject({ status: 400 });
    await expect(send(`migrate exp9 to ${stack.dest.uri}`)).rejects.toMatchObject({ status: 404 });
  } finally {
    await phone.stop();
  }
  expect(await stack.whereRuns("router1")).toEqual(["dc1"]);
});

test("MESSAGE 'migrate solo to URI' moves router1 and the outcome comes back as a MESSAGE", async () => {
  // The softphone in two sipp halves: one takes the outcome on its Contact port, one sends the command.
  const replyPort = randomPort();
  const outcome = sipp("message-outcome.xml", {}, replyPort);
  await new Promise((r) => setTimeout(r, 300)); // let the UAS half bind its port
  const trigger = await sipp("message-trigger.xml", {
    cmd: `migrate solo to ${stack.dest.uri}`,
    reply_port: String(replyPort),
  });
  expect(trigger).toMatchObject({ code: 0, successful: 1, failed: 0 });
  const r = await outcome;
  expect(r).toMatchObject({ code: 0, successful: 1, failed: 0 });
  expect(r.log).toMatch(/outcome: completed mig-[0-9a-f]+: router1 completed \(downtime \d+ ms\)/);
  expect(await stack.whereRuns("router1")).toEqual(["dc2"]);
  const { dialogs } = (
    await apiClient(stack.console.url, stack.console.token).get<{ dialogs: HistoryEntry[] }>("/api/history")
  ).body;
  expect(dialogs).toEqual([
    expect.objectContaining({
      by: "127.0.0.1 (From sip:ops@127.0.0.1, unproven)",
      outcome: "completed",
      to: stack.dest.uri,
    }),
  ]);
});
