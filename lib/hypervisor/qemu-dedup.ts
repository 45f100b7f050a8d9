/**
 * Group page dedup in the QEMU driver (nrdl/SPEC.md 5.8): QEMU migrates in plain over a local unix
 * socket on each end, and the dedup relays (lib/dedup/relay.ts) carry the stream between them
 * under TLS-PSK from the VM's one-time secret. Multifd (zstd, zlib) sends pages on channels the
 * relay never sees, and post-copy's page requests are no stream of records: both are refused.
 * XBZRLE goes through (its records pass as they are; a page QEMU sends whole may still be a hit).
 * QEMU's return path does not work through the relays yet (the destination's SHUT, its word that
 * it loaded the state, never reaches the source QEMU, which then fails a move that succeeded), so
 * a dedup move runs without it and only as a group commit: the source's copy stays paused until
 * the destination said the VM arrived, and resumes if it did not.
 */
import type { Logger } from "../log/logger";
import { TeleportError } from "../errors";
import { listenDestinationRelay, startSourceRelay, type DestinationRelay, type SourceRelay } from "../dedup/relay";
import type { SentPages } from "../dedup/encoder";
import type { DedupRebuilder } from "../dedup/rebuild";
import type { MigrationOptions, StreamReduction } from "./driver";
import { bindWithRetry, tcpUri } from "./net";
import type { QmpClient } from "./qmp";

export function vetDedup(vm: string, compress: StreamReduction | undefined, postcopy: boolean): void {
  if (compress && compress.method !== "xbzrle")
    throw new TeleportError(488, `group page dedup cannot go with compress ${compress.method} (${vm}: multifd)`);
  if (postcopy) throw new TeleportError(488, `group page dedup cannot go with post-copy (${vm})`);
}

/** A source's dedup move: only with group commit (no return path), never with post-copy. */
export function vetDedupMove(vm: string, opts: MigrationOptions): void {
  vetDedup(vm, opts.compress, opts.convergence === "postcopy");
  if (!opts.awaitCommit)
    throw new TeleportError(488, `group page dedup of ${vm} needs group commit (commit="group")`, [
      "without QEMU's return path only the destination's arrival report may end the source's copy",
    ]);
}

/** "tcp:HOST:PORT" (IPv6 in brackets) to host and port. */
function hostPort(uri: string): { host: string; port: number } {
  const m = /^tcp:\[?([^\]]+?)\]?:(\d+)$/.exec(uri);
  if (!m) throw new TeleportError(400, `a dedup stream goes to a tcp: listener, not ${uri}`);
  return { host: m[1], port: Number(m[2]) };
}

/**
 * Destination: the incoming QEMU listens on `socket` (local only), the relay on address:port;
 * the URI the source is told is the relay's.
 */
export async function listenDedupIncoming(
  client: QmpClient,
  opts: {
    vm: string;
    index: DedupRebuilder;
    address: string;
    port?: number;
    anotherPort?: () => Promise<number | undefined>;
    secret: string;
    socket: string;
  },
  log: Logger,
): Promise<{ uri: string; relay: DestinationRelay }> {
  await client.execute("migrate-incoming", { uri: `unix:${opts.socket}` });
  const relay = await bindWithRetry(opts.address, opts.port, opts.anotherPort, (port) =>
    listenDestinationRelay({
      vm: opts.vm,
      index: opts.index,
      address: opts.address,
      port,
      secret: opts.secret,
      incoming: opts.socket,
      onRefused: (why) => log.warn(`dedup listener of ${opts.vm} refused a connection`, { why }),
    }).catch((err: unknown) => {
      throw new TeleportError(503, `cannot listen for VM ${opts.vm} on port ${port}`, [
        TeleportError.from(err).message,
      ]);
    }),
  );
  relay.done.then(
    () => log.info(`dedup stream of ${opts.vm} rebuilt`, { ...opts.index.stats }),
    (err: unknown) => log.warn(`dedup stream of ${opts.vm} failed`, { error: TeleportError.from(err).message }),
  );
  return { uri: tcpUri(opts.address, relay.port), relay };
}

/** Source: the relay to the destination's armed URI; QEMU migrates to the returned relay's `uri`. */
export function startDedupOutgoing(
  vm: string,
  pages: SentPages,
  target: { uri: string; secret: string },
  dir: string,
): Promise<SourceRelay> {
  return startSourceRelay({ vm, pages, ...hostPort(target.uri), secret: target.secret, dir });
}
