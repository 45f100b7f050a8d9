/**
 * The armed port for libvirt: a TLS-PSK tunnel keyed by the dialog's one-time secret, in front
 * of the destination's libvirtd socket. The source agent opens the other end as a private Unix
 * socket and hands it to its own libvirtd as the peer-to-peer destination
 * (`qemu+unix:///system?socket=...`); with `--tunnelled` the whole migration stream travels
 * inside libvirt's RPC connection, so inside this tunnel. Without the secret the TLS handshake
 * fails and nothing reaches libvirtd; with it, one connection gets in, and only the calls of a
 * migration of the armed domain pass (libvirt-rpc-gate.ts).
 *
 * Native (not tunnelled) migration puts the stream beside the control connection: the source
 * passes `--migrateuri unix:///run/libvirt/qemu/st-H.sock` (H from the dialog's secret and the
 * domain, so both agents know it), the gate lets PREPARE3 through only with that URI, the
 * destination's QEMU listens on that path in its libvirtd's /run/libvirt, and the source's QEMU
 * connects to the same path on its own host, where the source agent listens. That agent carries the
 * stream over a second TLS-PSK connection to the same armed port, which the destination admits only
 * after the gate passed the armed domain's PREPARE3, only once, and only to that QEMU's socket.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { TeleportError } from "../errors";
import type { FinishWatch } from "./libvirt-finish-watch";
import { MIGRATION_PROCEDURES, PREPARE3_PARAMS, RpcGate, type ParamsCheck } from "./libvirt-rpc-gate";
import { migrationPsk, PSK_TLS, PSK_USER } from "./qemu-tls";

/** Either side closing or failing closes both. */
function closeTogether(a: net.Socket, b: net.Socket): void {
  const end = () => {
    a.destroy();
    b.destroy();
  };
  a.on("error", end).on("close", end);
  b.on("error", end).on("close", end);
}

function pipe(a: net.Socket, b: net.Socket): void {
  a.pipe(b);
  b.pipe(a);
  closeTogether(a, b);
}

/**
 * A native migration's stream on one host: the URI libvirt is given (the same on both hosts) and that
 * path as this agent sees it. libvirtd is taken to see the folder of its socket as /run/libvirt (the
 * system daemon does; the lab's daemons have their run folder bound there).
 */
export interface DataChannel {
  migrateUri: string;
  localPath: string;
}

/**
 * `kind` "st": the memory stream's path, from the dialog's secret; "nbd": the copied disks' NBD
 * server, from the NBD secret. Distinct per dialog and per domain; both agents derive the same.
 */
export function dataChannel(secret: string, domain: string, libvirtSocket: string, kind = "st"): DataChannel {
  const purpose = kind === "st" ? "stream" : kind;
  const h = crypto.createHash("sha256").update(`sip-teleport libvirt ${purpose}\0${secret}\0${domain}`).digest("hex");
  const name = `${kind}-${h.slice(0, 20)}.sock`;
  return {
    migrateUri: `unix:///run/libvirt/qemu/${name}`,
    localPath: path.join(path.dirname(libvirtSocket), "qemu", name),
  };
}

/** A TLS-PSK server keyed by `secret` (a wrong one fails the handshake: `refused` says so, nothing is used up). */
function pskServer(
  secret: string,
  refused: (why: string) => void,
  onSecure: (clear: tls.TLSSocket) => void,
): tls.Server {
  const psk = migrationPsk(secret);
  const server = tls.createServer(
    { ...PSK_TLS, pskCallback: (_socket, identity) => (identity === PSK_USER ? psk : null) },
    onSecure,
  );
  server.on("tlsClientError", (err) => refused(`TLS handshake failed (wrong secret?): ${err.message}`));
  return server;
}

function listenOn(server: net.Server, address: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", (err) =>
      reject(new TeleportError(503, `cannot listen on ${address}:${port}`, [(err as Error).message])),
    );
    server.listen(port, address, () => resolve());
  });
}

const closeServer = (server: net.Server): Promise<void> =>
  new Promise<void>((done) => (server.listening ? server.close(() => done()) : done()));

export interface TunnelServer {
  /** Connections that passed the handshake so far (the control one, and a native stream's). */
  readonly accepted: number;
  close(): Promise<void>;
}

export interface TunnelOptions {
  address: string;
  port: number;
  secret: string;
  /** The local libvirtd's Unix socket. */
  libvirtSocket: string;
  /** Judges the migration calls' parameters (which domain may come in). */
  check: ParamsCheck;
  /** A native migration's stream: where this host's QEMU listens for it (DataChannel.localPath). */
  dataPath?: string;
  /**
   * Copied disks (native only): a second port, keyed by the NBD secret, in front of the NBD server
   * libvirtd has this host's QEMU start on `path` (DataChannel.localPath of kind "nbd"). It admits
   * `connections` connections (QEMU's mirror opens one per disk), only after the gate let the armed
   * domain's PREPARE3 through, and none once the control connection ended.
   */
  nbd?: { port: number; secret: string; path: string; connections: number };
  /** A connection was refused or cut: wrong secret, a second connection, a call outside the migration. */
  onRefused(why: string): void;
  onProcedures?(names: string[]): void;
}

/** Client to libvirtd through the gate, libvirtd to client as is; backpressure both ways. */
function gatedPipe(clear: net.Socket, upstream: net.Socket, gate: RpcGate, refuse: (why: string) => void): void {
  clear.on("data", (chunk: Buffer) => {
    let out: Buffer[];
    try {
      out = gate.push(chunk);
    } catch (err) {
      refuse((err as Error).message);
      clear.destroy();
      upstream.destroy();
      return;
    }
    let full = false;
    for (const b of out) full = !upstream.write(b) || full;
    if (full) {
      clear.pause();
      upstream.once("drain", () => clear.resume());
    }
  });
  upstream.pipe(clear);
  closeTogether(clear, upstream);
}

/**
 * Destination: listen on ADDRESS:PORT for exactly one connection that proves the secret; it
 * reaches `libvirtSocket` through an RpcGate (migration calls only, for the domain `check`
 * admits). The listening socket closes as soon as that connection is in (with `dataPath`: once the
 * second, the stream, is in, or the first closed): any other connection is refused.
 */
export async function listenTunnel(opts: TunnelOptions): Promise<TunnelServer> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  let control: { gate: RpcGate; closed: boolean } | undefined;
  /** The native migration the gate let in, its control connection still open. */
  const prepared = () => !!control && !control.closed && control.gate.seen.includes(PREPARE3_PARAMS);
  const toQemu = (clear: net.Socket, where: string) => {
    const qemu = net.connect(where);
    sockets.add(clear).add(qemu);
    clear.on("close", () => sockets.delete(clear));
    qemu.on("close", () => sockets.delete(qemu));
    pipe(clear, qemu);
  };
  const nbd = opts.nbd;
  let disks = 0;
  const nbdServer =
    nbd &&
    pskServer(nbd.secret, opts.onRefused, (clear) => {
      if (!prepared() || disks >= nbd.connections) {
        opts.onRefused(`an NBD connection ${prepared() ? "beyond the copied disks" : "before the armed prepare"}`);
        return clear.destroy();
      }
      if (++disks === nbd.connections) nbdServer?.close();
      toQemu(clear, nbd.path);
    });
  const server = pskServer(opts.secret, opts.onRefused, (clear) => {
    const n = accepted++;
    if (n === 1 && opts.dataPath && prepared()) {
      // the native stream of the migration the gate let in: to that QEMU's socket only, once
      server.close();
      return toQemu(clear, opts.dataPath);
    }
    if (n > 0) {
      // two handshakes raced past listen(), or no native migration was let in: only the first one counts
      opts.onRefused("a second connection for a dialog that already has its one");
      return clear.destroy();
    }
    if (!opts.dataPath) server.close(); // one connection per dialog: from now on the port refuses
    const upstream = net.connect(opts.libvirtSocket);
    sockets.add(clear).add(upstream);
    const gate = new RpcGate(opts.check);
    const ctl = { gate, closed: false };
    control = ctl;
    clear.on("close", () => {
      sockets.delete(clear);
      ctl.closed = true;
      // the dialog's control connection is over: so are its ports
      server.close();
      nbdServer?.close();
    });
    upstream.on("close", () => sockets.delete(upstream));
    gatedPipe(clear, upstream, gate, opts.onRefused);
    clear.on("close", () => opts.onProcedures?.(gate.seen.map((p) => MIGRATION_PROCEDURES.get(p) ?? String(p))));
  });
  await listenOn(server, opts.address, opts.port);
  if (nbd && nbdServer)
    await listenOn(nbdServer, opts.address, nbd.port).catch(async (err: Error) => {
      await closeServer(server);
      throw err;
    });
  return {
    get accepted() {
      return accepted;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await Promise.all([server, ...(nbdServer ? [nbdServer] : [])].map(closeServer));
    },
  };
}

export interface TunnelClient {
  /** Unix socket the source's libvirtd connects to. */
  readonly socket: string;
  close(): Promise<void>;
}

/**
 * Source: a Unix socket in the private folder `dir`; each connection is carried to the armed port.
 * With `dataPath` (a native migration's DataChannel.localPath here) the source QEMU's stream too.
 */
export interface TunnelExtras {
  /** A native migration's DataChannel.localPath here: the source QEMU's stream, to the armed port. */
  dataPath?: string;
  /** Copied disks: where this host's QEMU connects for the NBD server, carried to the armed NBD port. */
  nbd?: { host: string; port: number; secret: string; path: string };
  /** Sees the control connection's bytes both ways (the destination's Finish). */
  watch?: FinishWatch;
}

export async function openTunnel(
  host: string,
  port: number,
  secret: string,
  dir: string,
  { dataPath, nbd, watch }: TunnelExtras = {},
): Promise<TunnelClient> {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { mode: 0o700 });
  const socket = path.join(dir, "peer.sock");
  const sockets = new Set<net.Socket>();
  const carrier = (to: { host: string; port: number; secret: string }, seen?: FinishWatch) => {
    const psk = migrationPsk(to.secret);
    return (local: net.Socket) => {
      const remote = tls.connect({
        ...PSK_TLS,
        host: to.host,
        port: to.port,
        pskCallback: () => ({ psk, identity: PSK_USER }),
        checkServerIdentity: () => undefined,
      });
      sockets.add(local).add(remote);
      local.on("close", () => sockets.delete(local));
      remote.on("close", () => sockets.delete(remote));
      if (seen) {
        local.on("data", (b: Buffer) => seen.sent(b));
        remote.on("data", (b: Buffer) => seen.answered(b));
      }
      pipe(local, remote);
    };
  };
  const armed = carrier({ host, port, secret });
  const listen = (where: string, carry: (local: net.Socket) => void) =>
    new Promise<net.Server>((resolve, reject) => {
      const server = net.createServer(carry);
      server.once("error", reject);
      server.listen(where, () => resolve(server));
    });
  const servers = [await listen(socket, carrier({ host, port, secret }, watch))];
  // the native stream's and the disks' sockets where this host's libvirtd and QEMU connect
  const beside: Array<[string, (local: net.Socket) => void]> = [];
  if (dataPath) beside.push([dataPath, armed]);
  if (nbd) beside.push([nbd.path, carrier(nbd)]);
  const close = async () => {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map(closeServer));
    fs.rmSync(dir, { recursive: true, force: true });
    for (const [where] of beside) fs.rmSync(where, { force: true });
  };
  for (const [where, carry] of beside) {
    fs.rmSync(where, { force: true }); // a stale one of a killed agent
    servers.push(await listen(where, carry).catch(async (err: Error) => (await close(), Promise.reject(err))));
  }
  return { socket, close };
}
