/**
 * The QMP client against a real QEMU (no guest: -S keeps it in prelaunch) and against a socket
 * that never greets.
 */
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import execa from "execa";
import { TeleportError } from "../../lib/errors";
import { livePid, terminate, waitExit } from "../../lib/hypervisor/pidfile";
import { QmpClient, QmpCommandError } from "../../lib/hypervisor/qmp";

let dir: string;
let sock: string;
let pidfile: string;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-qmp-"));
  sock = path.join(dir, "q.sock");
  pidfile = path.join(dir, "q.pid");
  await execa("qemu-system-x86_64", [
    "-S",
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-accel",
    "tcg",
    "-m",
    "16",
    "-qmp",
    `unix:${sock},server=on,wait=off`,
    "-pidfile",
    pidfile,
    "-daemonize",
  ]);
});

afterEach(async () => {
  const pid = livePid(pidfile);
  if (pid !== undefined) await terminate(pid, 500);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("greets, negotiates, and answers commands by id, also when several are in flight", async () => {
  const qmp = await QmpClient.connect(sock);
  const [status, name, again] = await Promise.all([
    qmp.execute<{ status: string; running: boolean }>("query-status"),
    qmp.execute<Record<string, unknown>>("query-name"),
    qmp.execute<{ status: string }>("query-status"),
  ]);
  expect(status).toMatchObject({ status: "prelaunch", running: false });
  expect(name).toEqual({});
  expect(again.status).toBe("prelaunch");
  await qmp.close();
});

test("commands sent while the capabilities are negotiated go out behind them and run after them", async () => {
  let status: Promise<{ status: string }> | undefined;
  const qmp = await QmpClient.connect(sock, {
    onNegotiating: (c) => (status = c.execute<{ status: string }>("query-status")),
  });
  // QEMU would answer CommandNotFound to a command that ran before the negotiation
  expect(await status).toMatchObject({ status: "prelaunch" });
  await qmp.close();
});

test("a QEMU error rejects with its class and description", async () => {
  const qmp = await QmpClient.connect(sock);
  const err = await qmp.execute("no-such-command").catch((e: unknown) => e);
  expect(err).toBeInstanceOf(QmpCommandError);
  expect(err).toMatchObject({ errorClass: "CommandNotFound", command: "no-such-command", status: 500 });
  const bad = await qmp.execute("migrate-set-parameters", { "downtime-limit": -5 }).catch((e: unknown) => e);
  expect(bad).toBeInstanceOf(QmpCommandError);
  // the connection still works after errors
  expect((await qmp.execute<{ status: string }>("query-status")).status).toBe("prelaunch");
  await qmp.close();
});

test("events arrive between replies and can be awaited", async () => {
  const qmp = await QmpClient.connect(sock);
  const seen: string[] = [];
  const off = qmp.onEvent((ev) => seen.push(ev.event));
  const resumed = qmp.waitForEvent((ev) => ev.event === "RESUME", 5000, "RESUME");
  await qmp.execute("cont");
  const ev = await resumed;
  expect(ev.timestamp.seconds).toBeGreaterThan(0);
  // QEMU sends STOP before its reply to stop: listen first
  const stopped = qmp.waitForEvent((e) => e.event === "STOP", 5000);
  await qmp.execute("stop");
  await stopped;
  off();
  expect(seen).toEqual(expect.arrayContaining(["RESUME", "STOP"]));
  await expect(qmp.waitForEvent(() => false, 100, "nothing")).rejects.toMatchObject({
    status: 504,
    reason: "no nothing within 100 ms",
  });
  await qmp.close();
});

test("quit closes the connection; pending and later commands reject", async () => {
  const qmp = await QmpClient.connect(sock);
  const pid = livePid(pidfile) as number;
  await qmp.execute("quit").catch(() => undefined);
  await qmp.closed;
  expect(qmp.isClosed).toBe(true);
  await expect(qmp.execute("query-status")).rejects.toBeInstanceOf(TeleportError);
  expect(await waitExit(pid, 5000)).toBe(true);
});

test("close() rejects a command still waiting for its reply", async () => {
  const qmp = await QmpClient.connect(sock);
  const pending = qmp.execute("query-status", undefined, { timeoutMs: 5000 });
  await qmp.close();
  await expect(pending).rejects.toMatchObject({ status: 503 });
  await qmp.close(); // twice is fine
});

test("a socket that never greets times out; a missing socket fails at once", async () => {
  const mute = path.join(dir, "mute.sock");
  const srv = net.createServer(() => undefined).listen(mute);
  await new Promise((r) => srv.once("listening", r));
  await expect(QmpClient.connect(mute, { timeoutMs: 200 })).rejects.toMatchObject({ status: 504 });
  srv.close();
  await expect(QmpClient.connect(path.join(dir, "absent.sock"))).rejects.toMatchObject({ status: 503 });
});

test("a command without a reply times out", async () => {
  // A fake monitor that greets and accepts capabilities, then stays silent.
  const fake = path.join(dir, "fake.sock");
  const srv = net
    .createServer((c) => {
      c.write('{"QMP": {"version": {}, "capabilities": []}}\r\n');
      c.on("data", (d) => {
        const msg = JSON.parse(d.toString().trim().split("\n")[0]) as { execute: string; id: string };
        if (msg.execute === "qmp_capabilities") c.write(JSON.stringify({ return: {}, id: msg.id }) + "\r\n");
      });
    })
    .listen(fake);
  await new Promise((r) => srv.once("listening", r));
  const qmp = await QmpClient.connect(fake);
  await expect(qmp.execute("query-status", undefined, { timeoutMs: 150 })).rejects.toMatchObject({
    status: 504,
    reason: "QMP query-status got no reply within 150 ms",
  });
  await qmp.close();
  srv.close();
});

test("what QEMU owed a monitor's previous client, before the greeting, is skipped; anything else fails", async () => {
  const serve = (file: string, before: string) =>
    net
      .createServer((c) => {
        c.write(before + '{"QMP": {"version": {}, "capabilities": []}}\r\n');
        c.on("data", (d) => {
          const msg = JSON.parse(d.toString().trim().split("\n")[0]) as { execute: string; id: string };
          if (msg.execute === "qmp_capabilities") c.write(JSON.stringify({ return: {}, id: msg.id }) + "\r\n");
        });
      })
      .listen(file);
  const stale =
    '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n' + '{"return": {}, "id": "q9"}\r\n';
  const owed = serve(path.join(dir, "owed.sock"), stale);
  const foreign = serve(path.join(dir, "foreign.sock"), '{"hello": "not QEMU"}\r\n');
  await Promise.all([owed, foreign].map((s) => new Promise((r) => s.once("listening", r))));
  const qmp = await QmpClient.connect(path.join(dir, "owed.sock"));
  await qmp.close();
  await expect(QmpClient.connect(path.join(dir, "foreign.sock"))).rejects.toMatchObject({ status: 502 });
  owed.close();
  foreign.close();
});
