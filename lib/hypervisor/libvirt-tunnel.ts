/**
 * The armed port for libvirt: a TLS-PSK tunnel keyed by the dialog's one-time secret, in front
 * of the destination's libvirtd socket. The source agent opens the other end as a private Unix
 * socket and hands it to its own libvirtd as the peer-to-peer destination
 * (`qemu+unix:///system?socket=...`); with `--tunnelled` the whole migration stream travels
 * inside libvirt's RPC connection, so inside this tunnel. Without the secret the TLS handshake
 * fails and nothing reaches libvirtd; with it, one connection gets in, and only the calls of a
 * migration of the armed domain pass (libvirt-rpc-gate.ts).
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { TeleportError } from "../errors";
import { MIGRATION_PROCEDURES, RpcGate, type ParamsCheck } from "./libvirt-rpc-gate";
import { migrationPsk, PSK_USER } from "./qemu-tls";

/** TLS 1.2 PSK suites (Node's pskCallback does not do TLS 1.3 PSK). */
const PSK_TLS = {
  ciphers: "PSK-AES256-GCM-SHA384:PSK-CHACHA20-POLY1305",
  minVersion: "TLSv1.2",
  maxVersion: "TLSv1.2",
} as const;

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

export interface TunnelServer {
  /** Connections that passed the handshake so far (at most one). */
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
 * admits). The listening socket closes as soon as that connection is in: a second one is refused.
 */
export function listenTunnel(opts: TunnelOptions): Promise<TunnelServer> {
  const psk = migrationPsk(opts.secret);
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = tls.createServer(
    { ...PSK_TLS, pskCallback: (_socket, identity) => (identity === PSK_USER ? psk : null) },
    (clear) => {
      if (accepted++ > 0) {
        // two handshakes raced past listen(): only the first one counts
        opts.onRefused("a second connection for a dialog that already has its one");
        return clear.destroy();
      }
      server.close(); // one connection per dialog: from now on the port refuses
      const upstream = net.connect(opts.libvirtSocket);
      sockets.add(clear).add(upstream);
      clear.on("close", () => sockets.delete(clear));
      upstream.on("close", () => sockets.delete(upstream));
      const gate = new RpcGate(opts.check);
      gatedPipe(clear, upstream, gate, opts.onRefused);
      clear.on("close", () => opts.onProcedures?.(gate.seen.map((p) => MIGRATION_PROCEDURES.get(p) ?? String(p))));
    },
  );
  server.on("tlsClientError", (err) => opts.onRefused(`TLS handshake failed (wrong secret?): ${err.message}`));
  return new Promise((resolve, reject) => {
    server.once("error", (err) =>
      reject(new TeleportError(503, `cannot listen on ${opts.address}:${opts.port}`, [(err as Error).message])),
    );
    server.listen(opts.port, opts.address, () =>
      resolve({
        get accepted() {
          return accepted;
        },
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            if (!server.listening) return done();
            server.close(() => done());
          }),
      }),
    );
  });
}

export interface TunnelClient {
  /** Unix socket the source's libvirtd connects to. */
  readonly socket: string;
  close(): Promise<void>;
}

/** Source: a Unix socket in the private folder `dir`; each connection is carried to the armed port. */
export function openTunnel(host: string, port: number, secret: string, dir: string): Promise<TunnelClient> {
  const psk = migrationPsk(secret);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { mode: 0o700 });
  const socket = path.join(dir, "peer.sock");
  const sockets = new Set<net.Socket>();
  const server = net.createServer((local) => {
    const remote = tls.connect({
      ...PSK_TLS,
      host,
      port,
      pskCallback: () => ({ psk, identity: PSK_USER }),
      checkServerIdentity: () => undefined,
    });
    sockets.add(local).add(remote);
    local.on("close", () => sockets.delete(local));
    remote.on("close", () => sockets.delete(remote));
    pipe(local, remote);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(socket, () =>
      resolve({
        socket,
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => {
              fs.rmSync(dir, { recursive: true, force: true });
              done();
            });
          }),
      }),
    );
  });
}
