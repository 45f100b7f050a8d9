/** The incoming migration's TLS-PSK credentials, against a real QEMU (no guest: -S keeps it in prelaunch). */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import execa from "execa";
import { livePid, terminate } from "../../lib/hypervisor/pidfile";
import { QmpClient } from "../../lib/hypervisor/qmp";
import { useServerKeyDir, writeServerKeyDir } from "../../lib/hypervisor/qemu-tls";

let dir: string;
let qmp: QmpClient;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-tls-"));
  const sock = path.join(dir, "q.sock");
  await execa("qemu-system-x86_64", [
    ...["-S", "-nodefaults", "-no-user-config", "-display", "none", "-accel", "tcg", "-m", "16"],
    ...["-qmp", `unix:${sock},server=on,wait=off`, "-pidfile", path.join(dir, "q.pid"), "-daemonize"],
    ...["-incoming", "defer"],
  ]);
  qmp = await QmpClient.connect(sock);
});

afterEach(async () => {
  await qmp.close();
  const pid = livePid(path.join(dir, "q.pid"));
  if (pid !== undefined) await terminate(pid, 500);
  fs.rmSync(dir, { recursive: true, force: true });
});

const tlsCreds = async () =>
  (await qmp.execute<{ "tls-creds"?: string }>("query-migrate-parameters"))["tls-creds"] ?? "";

test("the key folder holds the key and RFC 7919 DH parameters, private; the migration then uses them", async () => {
  const keys = path.join(dir, "psk-in");
  writeServerKeyDir(keys, "one-time-secret");
  expect(fs.readdirSync(keys).sort()).toEqual(["dh-params.pem", "keys.psk"]);
  expect(fs.statSync(keys).mode & 0o777).toBe(0o700);
  for (const f of fs.readdirSync(keys)) expect(fs.statSync(path.join(keys, f)).mode & 0o777).toBe(0o600);
  expect(fs.readFileSync(path.join(keys, "dh-params.pem"), "utf8")).toMatch(/^-----BEGIN DH PARAMETERS-----\n/);
  await useServerKeyDir(qmp, "st-incoming", keys);
  expect(await tlsCreds()).toBe("st-incoming");
});

test("credentials QEMU cannot make: refused with object-add's error, though QEMU took the parameter", async () => {
  // no key folder: object-add fails; the set-parameters sent with it succeeds (QEMU looks at the name only
  // when a migration starts), so only the refusal keeps the arming from listening
  await expect(useServerKeyDir(qmp, "st-incoming", path.join(dir, "missing"))).rejects.toMatchObject({
    command: "object-add",
  });
  expect(await tlsCreds()).toBe("st-incoming");
});
