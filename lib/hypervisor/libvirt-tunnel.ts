/**
 * The armed port for libvirt: a TLS-PSK tunnel keyed by the dialog's one-time secret, in front
 * of the destination's libvirtd socket. The source agent opens the other end as a private Unix
 * socket and hands it to its own libvirtd as the peer-to-peer destination
 * (`qemu+unix:///system?socket=...`); with `--tunnelled` the whole migration stream travels
 * inside libvirt's RPC connection, so inside this tunnel. Without the secret the TLS handshake
 * fails and nothing reaches libvirtd.
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import { TeleportError } from "../errors";
import { migrationPsk, PSK_USER } from "./qemu-tls";

/** TLS 1.2 PSK suites (Node's pskCallback does not do TLS 1.3 PSK). */
const PSK_TLS = {
  ciphers: "PSK-AES256-GCM-SHA384:PSK-CHACHA20-POLY1305",
  minVersion: "TLSv1.2",
  maxVersion: "TLSv1.2",
} as const;

function pipe(a: net.Socket, b: net.Socket): void {
  a.pipe(b);
  b.pipe(a);
  const end = () => {
    a.destroy();
    b.destroy();
  };
  a.on("error", end).on("close", end);
  b.on("error", end).on("close", end);
}

export interface TunnelServer {
  /** Connections that passed the handshake so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

/** Destination: listen on ADDRESS:PORT; each connection that proves the secret reaches `libvirtSocket`. */
export function listenTunnel(
  address: string,
  port: number,
  secret: string,
  libvirtSocket: string,
  onRefused: (why: string) => void,
): Promise<TunnelServer> {
  const psk = migrationPsk(secret);
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = tls.createServer(
    { ...PSK_TLS, pskCallback: (_socket, identity) => (identity === PSK_USER ? psk : null) },
    (clear) => {
      accepted++;
      const upstream = net.connect(libvirtSocket);
      sockets.add(clear).add(upstream);
      clear.on("close", () => sockets.delete(clear));
      upstream.on("close", () => sockets.delete(upstream));
      pipe(clear, upstream);
    },
  );
  server.on("tlsClientError", (err) => onRefused(err.message));
  return new Promise((resolve, reject) => {
    server.once("error", (err) =>
      reject(new TeleportError(503, `cannot listen on ${address}:${port}`, [(err as Error).message])),
    );
    server.listen(port, address, () =>
      resolve({
        get accepted() {
          return accepted;
        },
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
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
