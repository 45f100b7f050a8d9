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
