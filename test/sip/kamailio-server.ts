/**
 * Kamailio for tests: the deployment's config file, db_text users in a temp dir, foreground on
 * random loopback ports. Shared by the SIP-layer and end-to-end suites.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

/** The file docker-compose.yml mounts into the proxy: tests prove the setup operators deploy. */
export const KAMAILIO_CFG = path.join(__dirname, "..", "..", "deploy", "kamailio", "kamailio.cfg");

export const DOMAIN = "teleport.test";
export const KAMAILIO_USERS: Record<string, string> = { dc1: "dc1-secret-pw", dc2: "dc2-secret-pw" };

/** The subscriber table: `users` (user -> password) at DOMAIN, the agents' by default. */
export function writeUsers(dir: string, users: Record<string, string> = KAMAILIO_USERS): void {
  const rows = Object.entries(users).map(([u, p], i) => `${i + 1}:${u}:${DOMAIN}:${p}:::`);
  fs.writeFileSync(
    path.join(dir, "subscriber"),
    [
      "id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null)",
      ...rows,
      "",
    ].join("\n"),
  );
  fs.writeFileSync(path.join(dir, "version"), "table_name(string) table_version(int)\nsubscriber:7\nversion:1\n");
}

export function startKamailio(dir: string, port: number): { child: ChildProcess; log: () => string } {
  let log = "";
  const child = spawn(
    "kamailio",
    [
      "-f",
      KAMAILIO_CFG,
      "-DD",
      "-E",
      "-m",
      "32",
      "-M",
      "4",
      "-w",
      dir,
      "-Y",
      dir,
      "-P",
      path.join(dir, "k.pid"),
      "-l",
      `udp:127.0.0.1:${port}`,
      "-l",
      `tcp:127.0.0.1:${port}`,
      "-A",
      `DBURL="text://${dir}"`,
      "-A",
      "MIN_EXPIRES=1",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const keep = (d: Buffer): void => void (log = (log + d.toString()).slice(-20000));
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  return { child, log: () => log };
}

/** Resolves once Kamailio accepts TCP connections on `port` (UDP gets retransmissions; TCP does not wait). */
export async function kamailioReady(port: number, timeoutMs = 15000): Promise<void> {
  const net = await import("node:net");
  for (const end = Date.now() + timeoutMs; Date.now() < end;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port }, () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Kamailio did not listen on TCP ${port} within ${timeoutMs} ms`);
}
