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
  writeKeyDir(dir, secret);
  try {
    const args: Record<string, unknown> = { "qom-type": "tls-creds-psk", id, endpoint, dir };
    if (endpoint === "client") args.username = PSK_USER;
    await client.execute("object-add", args);
  } finally {
    if (endpoint === "client") fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Forget credentials after a failed outgoing migration, so a retry starts clean. */
export async function dropMigrationSecret(client: QmpClient, id: string): Promise<void> {
  await client.execute("migrate-set-parameters", { "tls-creds": "" }).catch(() => undefined);
  await client.execute("object-del", { id }).catch(() => undefined);
}
