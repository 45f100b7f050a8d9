/** Migration listener addresses, shared by the drivers. */
import net from "node:net";

/** "tcp:HOST:PORT" with IPv6 addresses in brackets (QEMU's form; VirtualBox's target is parsed from it). */
export function tcpUri(address: string, port: number): string {
  return net.isIPv6(address) ? `tcp:[${address}]:${port}` : `tcp:${address}:${port}`;
}

/** A port nobody listens on right now (the hypervisor binds it a moment later; callers retry on a clash). */
export function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, address, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Binds a listener with `bind(port)`, starting from `first` (a free one when omitted). A port found
 * free may be taken before the hypervisor binds it (the agent's range may overlap the kernel's
 * ephemeral ports): then `another` (the caller's range), or any free port when the caller had none,
 * is tried, three binds at most. The last bind error is thrown.
 */
export async function bindWithRetry<T>(
  address: string,
  first: number | undefined,
  another: (() => Promise<number | undefined>) | undefined,
  bind: (port: number) => Promise<T>,
): Promise<T> {
  const next = first === undefined ? () => freePort(address) : another;
  let port = first ?? (await freePort(address));
  for (let attempt = 1; ; attempt++) {
    try {
      return await bind(port);
    } catch (err) {
      const retry = attempt < 3 && next ? await next() : undefined;
      if (retry === undefined) throw err;
      port = retry;
    }
  }
}
