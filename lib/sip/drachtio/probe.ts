/**
 * Does a drachtio-server answer, and accept our secret? One authenticate exchange on its admin
 * port (drachtio's wire protocol: `<length>#<id>|authenticate|<secret>|`), no route registered,
 * so probing a production server never steals a call from its apps.
 */
import { randomUUID } from "node:crypto";
import net from "node:net";
import type { DrachtioConnection } from "../drachtio-backend";

export type ProbeResult = { ok: true; sip: string; version: string } | { ok: false; detail: string };

export function probeDrachtio(conn: DrachtioConnection, timeoutMs = 3000): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const id = randomUUID();
    const msg = `${id}|authenticate|${conn.secret}|`;
    let buf = "";
    const sock = net.connect({ host: conn.host, port: conn.port });
    const done = (r: ProbeResult): void => {
      sock.destroy();
      clearTimeout(timer);
      resolve(r);
    };
    const timer = setTimeout(
      () => done({ ok: false, detail: `no answer from ${conn.host}:${conn.port} in ${timeoutMs} ms` }),
      timeoutMs,
    );
    sock.on("connect", () => sock.write(`${Buffer.byteLength(msg)}#${msg}`));
    sock.on("error", (err) => done({ ok: false, detail: `${conn.host}:${conn.port}: ${err.message}` }));
    sock.on("data", (d) => {
      buf += d.toString();
      const hash = buf.indexOf("#");
      if (hash < 0) return;
      const len = Number(buf.slice(0, hash));
      if (buf.length - hash - 1 < len) return;
      const parts = buf.slice(hash + 1, hash + 1 + len).split("|");
      // <id>|response|<our id>|OK|<hostport>|<version>|...
      if (parts[1] !== "response" || parts[2] !== id) return done({ ok: false, detail: "not a drachtio-server" });
      if (parts[3] !== "OK") return done({ ok: false, detail: "drachtio-server refused the secret" });
      done({ ok: true, sip: parts[4] ?? "", version: parts[5] ?? "" });
    });
  });
}
