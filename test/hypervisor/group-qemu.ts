/** Helpers of the group switchover tests with real QEMU (group-switchover, group-commit). */
import http from "node:http";
import type { QemuDriver } from "../../lib/hypervisor/qemu";
import { QmpClient } from "../../lib/hypervisor/qmp";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import { ensureGuest, type GuestFiles } from "../../lib/guest/guest";
import { makeHosts, tearDown, type Hosts } from "../harness/hosts";

export const SECRET = "group-one-time-secret";

/** QEMU's own run state of the VM on that host (query-status), not the driver's reading of it. */
export async function qemuStatus(driver: QemuDriver, vm: string): Promise<string> {
  const mon = await QmpClient.connect(driver.files(vm).mon);
  try {
    return (await mon.execute<{ status: string }>("query-status")).status;
  } finally {
    await mon.close();
  }
}

/** Resolves when the guest's serial log says it booted (its httpd listens then). */
export async function booted(driver: QemuDriver, vm: string, timeoutMs = 20_000): Promise<void> {
  const fs = await import("node:fs");
  for (const end = Date.now() + timeoutMs; Date.now() < end; await new Promise((r) => setTimeout(r, 100)))
    if (fs.readFileSync(driver.files(vm).serial, "utf8").includes(`GUEST-READY ${vm}`)) return;
  throw new Error(`${vm} did not boot within ${timeoutMs} ms`);
}

/**
 * Ask the guest itself (its httpd's /cgi-bin/up: "NAME up SECONDSs") through a user-mode port
 * forward added on that host only (hostfwd is host state, not migrated). Resolves with its uptime.
 */
export async function guestUptime(driver: QemuDriver, vm: string, port: number): Promise<number> {
  const mon = await QmpClient.connect(driver.files(vm).mon);
  try {
    await mon.execute("human-monitor-command", { "command-line": `hostfwd_add net0 tcp:127.0.0.1:${port}-:80` });
  } finally {
    await mon.close();
  }
  for (let attempt = 1; ; attempt++) {
    try {
      const body = await new Promise<string>((resolve, reject) => {
        // busybox httpd ends CGI headers with a bare LF
        const opts = { host: "127.0.0.1", port, path: "/cgi-bin/up", timeout: 3000, insecureHTTPParser: true };
        const req = http.get(opts, (res) => {
          let data = "";
          res.on("data", (c: Buffer) => (data += c.toString()));
          res.on("end", () => resolve(data));
        });
        req.on("timeout", () => req.destroy(new Error("timeout")));
        req.on("error", reject);
      });
      const m = new RegExp(`${vm} up ([\\d.]+)s`).exec(body);
      if (m) return Number(m[1]);
      throw new Error(`unexpected answer: ${body}`);
    } catch (err) {
      if (attempt >= 10) throw err;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

/**
 * A QEMU driver test file's setup: the guest built once (beforeAll) and each test's two hosts
 * torn down after it (afterEach). `hosts` is the current test's, once `make` was called.
 */
export function qemuHostsPerTest(): { guest(): GuestFiles; make(defs: VmDefinition[]): Hosts; readonly hosts: Hosts } {
  let guest: GuestFiles | undefined;
  let current: Hosts | undefined;
  beforeAll(async () => {
    guest = await ensureGuest();
  });
  afterEach(async () => {
    if (current) await tearDown(current);
    current = undefined;
  });
  return {
    guest: () => {
      if (!guest) throw new Error("the guest is built in beforeAll");
      return guest;
    },
    make: (defs) => (current = makeHosts(defs)),
    get hosts() {
      if (!current) throw new Error("no hosts made in this test");
      return current;
    },
  };
}
