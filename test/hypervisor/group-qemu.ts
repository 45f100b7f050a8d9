/** Helpers of the group switchover tests with real QEMU (group-switchover, group-commit). */
import http from "node:http";
import type { QemuDriver } from "../../lib/hypervisor/qemu";
import { QmpClient } from "../../lib/hypervisor/qmp";

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
