/**
 * The one-time migration secret as TLS-PSK: QEMU's migration stream is otherwise plain TCP that
 * anyone reaching the listener could feed a VM into. Both ends derive the same pre-shared key
 * from the secret; a peer without it fails the TLS handshake and the migration fails.
 * QEMU's client credentials read the key file when created (so it is removed at once); the
 * server's are read at each handshake (so the file stays until the VM arrived or the listener goes).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { TeleportError } from "../errors";
import type { QmpClient } from "./qmp";

export const PSK_USER = "sip-teleport";

/** TLS 1.2 PSK suites for Node's own ends (its pskCallback does not do TLS 1.3 PSK). */
export const PSK_TLS = {
  ciphers: "PSK-AES256-GCM-SHA384:PSK-CHACHA20-POLY1305",
  minVersion: "TLSv1.2",
  maxVersion: "TLSv1.2",
} as const;

/**
 * RFC 7919's ffdhe2048 group (PKCS#3, as `openssl genpkey -genparam -algorithm DH -pkeyopt
 * group:ffdhe2048` writes it), the size QEMU would generate. Without a dh-params.pem in its folder
 * QEMU's server credentials generate fresh parameters in object-add: 50-450 ms of CPU per listener
 * (2.2 s with four at once on 2 cores), most of an INVITE's arming. A published safe-prime group is
 * what TLS uses anyway (RFC 7919); the secret is the PSK, not these public parameters.
 */
const FFDHE2048_PEM = `-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
`;

/** The pre-shared key both ends derive from the one-time secret (QEMU's and libvirt's tunnel). */
export function migrationPsk(secret: string): Buffer {
  if (!secret) throw new TeleportError(400, "a migration needs a non-empty secret");
  return crypto.createHash("sha256").update(secret, "utf8").digest();
}

/**
 * Write keys.psk (mode 0600) into a fresh private folder. Server credentials read it at each
 * handshake, so rewriting it gives an existing listener a new secret (post-copy recovery).
 */
export function writeKeyDir(dir: string, secret: string): void {
  const key = migrationPsk(secret).toString("hex");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { mode: 0o700 });
  fs.writeFileSync(path.join(dir, "keys.psk"), `${PSK_USER}:${key}\n`, { mode: 0o600, flag: "wx" });
}

/**
 * Give this QEMU TLS-PSK credentials made from the secret and use them for its migrations.
 * `dir` is a private folder for the key file; for a client it is removed before returning.
 */
export async function useMigrationSecret(
  client: QmpClient,
  endpoint: "server" | "client",
  id: string,
  secret: string,
  dir: string,
): Promise<void> {
  await addPskCredentials(client, endpoint, id, secret, dir);
  await client.execute("migrate-set-parameters", { "tls-creds": id });
}

/**
 * TLS-PSK credentials `id` in this QEMU, from the secret (the migration stream and the NBD disk
 * mirrors use the same scheme). For a client, `dir` is removed before returning.
 */
export async function addPskCredentials(
  client: QmpClient,
  endpoint: "server" | "client",
  id: string,
  secret: string,
  dir: string,
): Promise<void> {
  if (endpoint === "server") writeServerKeyDir(dir, secret);
  else writeKeyDir(dir, secret);
  try {
    const args: Record<string, unknown> = { "qom-type": "tls-creds-psk", id, endpoint, dir };
    if (endpoint === "client") args.username = PSK_USER;
    await client.execute("object-add", args);
  } finally {
    if (endpoint === "client") fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The folder of server credentials: keys.psk and the DH parameters, which a server loads once,
 * in object-add (a recovery's new key needs none). Written apart so an arming can write it while
 * its QEMU starts.
 */
export function writeServerKeyDir(dir: string, secret: string): void {
  writeKeyDir(dir, secret);
  fs.writeFileSync(path.join(dir, "dh-params.pem"), FFDHE2048_PEM, { mode: 0o600 });
}

/**
 * Server credentials `id` from the folder writeServerKeyDir wrote, for this QEMU's incoming
 * migration. Both commands go out at once and QEMU runs them in order; it takes the parameter even
 * without the object (it looks only when a migration starts), so the first failure is thrown and
 * nothing may listen before this has resolved.
 */
export async function useServerKeyDir(client: QmpClient, id: string, dir: string): Promise<void> {
  const done = await Promise.allSettled([
    client.execute("object-add", { "qom-type": "tls-creds-psk", id, endpoint: "server", dir }),
    client.execute("migrate-set-parameters", { "tls-creds": id }),
  ]);
  for (const r of done) if (r.status === "rejected") throw r.reason;
}

/** Forget credentials after a failed outgoing migration, so a retry starts clean. */
export async function dropMigrationSecret(client: QmpClient, id: string): Promise<void> {
  await client.execute("migrate-set-parameters", { "tls-creds": "" }).catch(() => undefined);
  await client.execute("object-del", { id }).catch(() => undefined);
}
