/**
 * A guest that dirties memory faster than the link carries (the test guest's writer, st.dirty=16:
 * 16 MiB rewritten every second, over a 40 Mbit/s cap = 5 MB/s): plain pre-copy never converges and
 * times out with the VM still at the source; auto-converge throttles the guest until it does;
 * post-copy switches over and fetches the rest on demand. Real QEMU (TCG) migrations over TLS-PSK.
 */
import type { MigrationOptions } from "../../lib/hypervisor/driver";
import { ensureGuest, guestVm, type GuestFiles } from "../../lib/guest/guest";
import { TeleportError } from "../../lib/errors";
import { hostsRunning, makeHosts, tearDown, type Hosts } from "../harness/hosts";

jest.setTimeout(120_000);

const SECRET = "s3cret-one-time";
const dirtying: MigrationOptions = { bandwidthMbps: 40, downtimeLimitMs: 300, timeoutS: 90 };

let guest: GuestFiles;
let hosts: Hosts;

beforeAll(async () => {
  guest = await ensureGuest();
});

afterEach(async () => {
  await tearDown(hosts);
});

async function startDirtying(): Promise<void> {
  const def = guestVm(guest, "vm1");
  def.append = `${def.append} st.dirty=16`;
  hosts = makeHosts([def]);
  await hosts.dc1.start("vm1");
  await new Promise((r) => setTimeout(r, 8000)); // boot and first passes of the writer
}

async function move(opts: MigrationOptions) {
  const postcopy = opts.convergence === "postcopy";
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET, postcopy });
  const handle = hosts.dc1.migrate("vm1", { uri: armed.uri, secret: SECRET }, opts);
  return handle.done;
}

test("none: pre-copy does not converge, times out, and the VM runs on at the source", async () => {
  await startDirtying();
  const err = await move({ ...dirtying, timeoutS: 15 }).then(
    () => undefined,
    (e: unknown) => TeleportError.from(e),
  );
  expect(err?.status).toBe(504);
  expect(await hosts.dc1.state("vm1")).toBe("running");
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc1"]);
});

test("auto-converge: the throttled guest converges and moves", async () => {
  await startDirtying();
  const result = await move({ ...dirtying, convergence: "auto-converge" });
  expect(result.downtimeMs).toBeGreaterThanOrEqual(0);
  await hosts.dc2.waitResumed("vm1", 10_000);
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc2"]);
});

test("postcopy: pre-copy stops gaining, post-copy completes the move", async () => {
  await startDirtying();
  const result = await move({ ...dirtying, convergence: "postcopy" });
  expect(result.transferredBytes).toBeGreaterThan(0);
  await hosts.dc2.waitResumed("vm1", 10_000);
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc2"]);
});
