/**
 * The QEMU driver's stream reductions (nrdl/SPEC.md 5.7) between two run dirs on loopback: multifd
 * zlib moves a VM with every channel under the migration's TLS-PSK; a connection that does not
 * know the secret gets nothing into the listener; the wrong secret fails a multifd migration as
 * it fails the plain one, and the VM keeps running on the source.
 */
import fs from "node:fs";
import net from "node:net";
import { TeleportError } from "../../lib/errors";
import type { MigrationOptions, StreamReduction } from "../../lib/hypervisor/driver";
import { xbzrleCacheBytes } from "../../lib/hypervisor/qemu-compress";
import { QmpClient } from "../../lib/hypervisor/qmp";
import { ensureGuest, guestVm } from "../../lib/guest/guest";
import { hostsRunning, makeHosts, tearDown, type Hosts } from "../harness/hosts";

jest.setTimeout(60_000);

const SECRET = "s3cret-one-time";
const ZLIB: StreamReduction = { method: "zlib", channels: 2 };
const opts: MigrationOptions = { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 30, compress: ZLIB };

let hosts: Hosts;

beforeEach(async () => {
  hosts = makeHosts([guestVm(await ensureGuest(), "vm1")]);
  await hosts.dc1.start("vm1");
});

afterEach(async () => {
  await tearDown(hosts);
});

function portOf(uri: string): number {
  return Number(uri.split(":").at(-1));
}

/** A stranger on the listener: plain TCP, bytes that are no TLS handshake with the key. */
async function stranger(port: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => s.end(Buffer.alloc(4096, 0x16), () => resolve()));
    s.on("error", () => resolve());
  });
}

test("zlib over 2 multifd channels: strangers on the listener get nothing in; the VM moves and runs", async () => {
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET, compress: ZLIB });
  await stranger(portOf(armed.uri));
  await stranger(portOf(armed.uri));
  await hosts.dc1.migrate("vm1", { uri: armed.uri, secret: SECRET }, opts).done;
  await hosts.dc2.waitResumed("vm1", 10_000);
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc2"]);
  expect(await hosts.dc2.state("vm1")).toBe("running");
  const mon = await QmpClient.connect(hosts.dc2.files("vm1").mon);
  try {
    const caps = await mon.execute<Array<{ capability: string; state: boolean }>>("query-migrate-capabilities");
    expect(caps.find((c) => c.capability === "multifd")?.state).toBe(true);
    const params = await mon.execute<Record<string, unknown>>("query-migrate-parameters");
    expect(params).toMatchObject({ "multifd-compression": "zlib", "multifd-channels": 2, "tls-creds": "st-incoming" });
  } finally {
    await mon.close();
  }
});

test("zstd with a wrong secret: every channel's handshake fails, 503, the VM keeps running here", async () => {
  const zstd: StreamReduction = { method: "zstd", channels: 2 };
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET, compress: zstd });
  let err: TeleportError | undefined;
  await hosts.dc1
    .migrate("vm1", { uri: armed.uri, secret: "guessed-secret" }, { ...opts, compress: zstd })
    .done.catch((e: unknown) => (err = TeleportError.from(e)));
  expect(err?.status).toBe(503);
  expect(err?.details).toContain("the VM keeps running on the source");
  expect(await hosts.dc1.state("vm1")).toBe("running");
  await hosts.dc2.disarm("vm1");
  expect(fs.readdirSync(hosts.dirs.dc2).filter((f) => !f.endsWith(".log"))).toEqual([]);
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc1"]);
});

test("the XBZRLE cache is a power of two, at most half the guest and 64 MiB", () => {
  expect(xbzrleCacheBytes(96 * 2 ** 20)).toBe(32 * 2 ** 20);
  expect(xbzrleCacheBytes(4 * 2 ** 30)).toBe(64 * 2 ** 20);
  expect(xbzrleCacheBytes(16 * 2 ** 20)).toBe(8 * 2 ** 20);
});
