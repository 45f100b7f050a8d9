/**
 * Real QEMU live migrations between two run dirs ("hosts") on loopback, TCG, NIC-less 96 MiB guests.
 */
import fs from "node:fs";
import net from "node:net";
import type { MigrationOptions, MigrationProgress } from "../../lib/hypervisor/driver";
import { freePort } from "../../lib/hypervisor/net";
import { QmpClient } from "../../lib/hypervisor/qmp";
import { ensureGuest, guestVm, type GuestFiles } from "../../lib/guest/guest";
import { hostsRunning, makeHosts, tearDown, type Hosts } from "../harness/hosts";

jest.setTimeout(60_000);

const SECRET = "s3cret-one-time";
const fast: MigrationOptions = { bandwidthMbps: 0, downtimeLimitMs: 300, timeoutS: 30 };

let guest: GuestFiles;
let hosts: Hosts;

beforeAll(async () => {
  guest = await ensureGuest();
});

afterEach(async () => {
  await tearDown(hosts);
});

function expectOnlyOn(vm: string, host: "dc1" | "dc2"): void {
  expect(hostsRunning(hosts, vm)).toEqual([host]);
}

async function migrateOne(vm: string, opts: MigrationOptions = fast) {
  const armed = await hosts.dc2.arm(vm, { address: "127.0.0.1", secret: SECRET });
  expect(armed.uri).toMatch(/^tcp:127\.0\.0\.1:\d+$/);
  expect(await hosts.dc2.state(vm)).toBe("incoming");
  const handle = hosts.dc1.migrate(vm, { uri: armed.uri, secret: SECRET }, opts);
  const result = await handle.done;
  await hosts.dc2.waitResumed(vm, 10_000);
  return result;
}

test("one VM moves: QEMU's figures come back, the source is gone, the destination runs", async () => {
  // with a virtio-net NIC (user-mode here): identical mac= and romfile= on both ends
  hosts = makeHosts([guestVm(guest, "vm1", { nics: [{ kind: "user", mac: "52:54:00:00:00:31" }] })]);
  await hosts.dc1.start("vm1");
  expect(await hosts.dc1.state("vm1")).toBe("running");
  expect(await hosts.dc2.state("vm1")).toBe("absent");
  const progress: MigrationProgress[] = [];
  const result = await migrateOne("vm1", { ...fast, onProgress: (p) => progress.push(p) });
  expect(result.vm).toBe("vm1");
  expect(result.totalMs).toBeGreaterThan(0);
  expect(result.downtimeMs).toBeGreaterThanOrEqual(0);
  expect(result.transferredBytes).toBeGreaterThan(1_000_000);
  expect(progress.at(-1)).toMatchObject({ phase: "completed", progress: 1 });
  expect(progress.map((p) => p.phase)).toContain("active");
  expect(await hosts.dc1.state("vm1")).toBe("absent");
  expect(await hosts.dc2.state("vm1")).toBe("running");
  expectOnlyOn("vm1", "dc2");
  // the stream was TLS-PSK from the secret; no key file outlives the migration
  const dc2Files = hosts.dc2.files("vm1");
  expect(fs.existsSync(dc2Files.pskIn) || fs.existsSync(dc2Files.pskOut)).toBe(false);
  expect(fs.readdirSync(hosts.dirs.dc1).filter((f) => !f.endsWith(".log"))).toEqual([]);
});

test("a VM moves back after arriving (a former migration target is followed by events)", async () => {
  hosts = makeHosts([guestVm(guest, "vm1")]);
  await hosts.dc1.start("vm1");
  await migrateOne("vm1");
  const back = await hosts.dc1.arm("vm1", { address: "127.0.0.1", secret: SECRET });
  const phases: string[] = [];
  const result = await hosts.dc2.migrate(
    "vm1",
    { uri: back.uri, secret: SECRET },
    { ...fast, onProgress: (p) => phases.push(p.phase) },
  ).done;
  await hosts.dc1.waitResumed("vm1", 10_000);
  expect(result.transferredBytes).toBeGreaterThan(1_000_000);
  expect(phases).toContain("active");
  expectOnlyOn("vm1", "dc1");
});

test("two VMs, sequentially then in parallel", async () => {
  hosts = makeHosts([guestVm(guest, "vm1"), guestVm(guest, "vm2")]);
  await Promise.all([hosts.dc1.start("vm1"), hosts.dc1.start("vm2")]);
  for (const vm of ["vm1", "vm2"]) await migrateOne(vm);
  expectOnlyOn("vm1", "dc2");
  expectOnlyOn("vm2", "dc2");
  // and back, both at once
  const armed = await Promise.all(
    ["vm1", "vm2"].map((vm) => hosts.dc1.arm(vm, { address: "127.0.0.1", secret: SECRET })),
  );
  const results = await Promise.all(
    armed.map((a) => hosts.dc2.migrate(a.vm, { uri: a.uri, secret: SECRET }, fast).done),
  );
  await Promise.all(armed.map((a) => hosts.dc1.waitResumed(a.vm, 10_000)));
  expect(results.map((r) => r.vm).sort()).toEqual(["vm1", "vm2"]);
  expectOnlyOn("vm1", "dc1");
  expectOnlyOn("vm2", "dc1");
});

test("bandwidth and downtime limits reach QEMU", async () => {
  hosts = makeHosts([guestVm(guest, "vm1")]);
  await hosts.dc1.start("vm1");
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET });
  const handle = hosts.dc1.migrate(
    "vm1",
    { uri: armed.uri, secret: SECRET },
    { bandwidthMbps: 800, downtimeLimitMs: 20, timeoutS: 30 },
  );
  // Read the parameters back from QEMU through the short-query monitor while it migrates.
  const mon = await QmpClient.connect(hosts.dc1.files("vm1").mon);
  let params: Record<string, unknown> = {};
  for (let i = 0; i < 40 && params["downtime-limit"] !== 20; i++) {
    params = await mon.execute<Record<string, unknown>>("query-migrate-parameters");
    await new Promise((r) => setTimeout(r, 25));
  }
  await mon.close();
  expect(params["max-bandwidth"]).toBe(100_000_000); // 800 Mbit/s in bytes/s
  expect(params["downtime-limit"]).toBe(20);
  const result = await handle.done;
  expect(result.downtimeMs).toBeGreaterThanOrEqual(0);
  await hosts.dc2.waitResumed("vm1", 10_000);
  expectOnlyOn("vm1", "dc2");
});

test("a port taken between the agent's check and QEMU's bind: the listener takes another of the range", async () => {
  hosts = makeHosts([guestVm(guest, "vm1")]);
  await hosts.dc1.start("vm1");
  // someone else binds the port the agent found free (an outgoing connection's ephemeral port, say)
  const squatter = net.createServer();
  await new Promise<void>((r) => squatter.listen(0, "127.0.0.1", r));
  const taken = (squatter.address() as net.AddressInfo).port;
  try {
    const alone = { address: "127.0.0.1", port: taken, secret: SECRET };
    await expect(hosts.dc2.arm("vm1", alone)).rejects.toMatchObject({ status: 503 });
    await hosts.dc2.disarm("vm1");
    const offered: number[] = [];
    const anotherPort = async () => {
      const p = await freePort("127.0.0.1");
      offered.push(p);
      return p;
    };
    const armed = await hosts.dc2.arm("vm1", { ...alone, anotherPort });
    expect(offered).toHaveLength(1);
    expect(armed.uri).toBe(`tcp:127.0.0.1:${offered[0]}`);
    await hosts.dc1.migrate("vm1", { uri: armed.uri, secret: SECRET }, fast).done;
    await hosts.dc2.waitResumed("vm1", 10_000);
    expectOnlyOn("vm1", "dc2");
  } finally {
    squatter.close();
  }
});

test("held for switchover: the VM keeps running in pre-copy until switchover()", async () => {
  hosts = makeHosts([guestVm(guest, "vm1")]);
  await hosts.dc1.start("vm1");
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET });
  let sentWhenReady = 0;
  let sent = 0;
  const handle = hosts.dc1.migrate(
    "vm1",
    { uri: armed.uri, secret: SECRET },
    { ...fast, pauseBeforeSwitchover: true, onProgress: (p) => (sent = p.transferredBytes) },
  );
  await handle.readyToSwitch;
  sentWhenReady = sent;
  expect(sentWhenReady).toBeGreaterThan(1_000_000); // the first pass is done before the wave is told
  await new Promise((r) => setTimeout(r, 1000)); // held: still running at the source, not arrived
  expect(await hosts.dc1.state("vm1")).toBe("running");
  expect(await hosts.dc2.state("vm1")).toBe("incoming");
  expect(sent).toBeGreaterThan(sentWhenReady); // pre-copy goes on sending what the guest writes
  await handle.switchover();
  const result = await handle.done;
  expect(result.transferredBytes).toBeGreaterThan(1_000_000);
  await hosts.dc2.waitResumed("vm1", 10_000);
  expectOnlyOn("vm1", "dc2");
});

test("an agent restart finds running and armed VMs again", async () => {
  hosts = makeHosts([guestVm(guest, "vm1"), guestVm(guest, "vm2")]);
  await hosts.dc1.start("vm1");
  await hosts.dc1.start("vm2");
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET });
  // new drivers on the same run dirs
  const dc1 = hosts.reopen("dc1");
  const dc2 = hosts.reopen("dc2");
  expect(await dc1.state("vm1")).toBe("running");
  expect(await dc1.state("vm2")).toBe("running");
  expect(await dc2.state("vm1")).toBe("incoming");
  await dc1.migrate("vm1", { uri: armed.uri, secret: SECRET }, fast).done;
  await dc2.waitResumed("vm1", 10_000);
  expectOnlyOn("vm1", "dc2");
  await dc1.stop("vm2");
  expect(hostsRunning(hosts, "vm2")).toEqual([]);
});
