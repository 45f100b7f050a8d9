import { createServer } from "node:net";

/** Whether a TCP port can be bound on `address` right now. */
export function portFree(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen({ host: address, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** Every port of "LOW-HIGH" that can be bound now, up to `want` of them (ascending). */
export async function freePortsInRange(address: string, range: string, want = Infinity): Promise<number[]> {
  const [lo, hi] = range.split("-").map(Number);
  const free: number[] = [];
  for (let port = lo; port <= hi && free.length < want; port++) if (await portFree(address, port)) free.push(port);
  return free;
}

/**
 * A free port in "LOW-HIGH" that is not `taken`. Ports are tried from a random start so two
 * dialogs arming at once rarely race for the same one; the caller still handles a bind failure.
 */
export async function freePortInRange(
  address: string,
  range: string,
  taken: ReadonlySet<number> = new Set(),
): Promise<number | undefined> {
  const [lo, hi] = range.split("-").map(Number);
  const span = hi - lo + 1;
  const start = Math.floor(Math.random() * span);
  for (let i = 0; i < span; i++) {
    const port = lo + ((start + i) % span);
    if (!taken.has(port) && (await portFree(address, port))) return port;
  }
  return undefined;
}
