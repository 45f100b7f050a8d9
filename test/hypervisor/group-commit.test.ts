/**
 * Group commit with real QEMU (TCG, loopback): the destination armed with holdOnArrival keeps the
 * arrived VM paused ("arrived") until the decision, the source with awaitCommit keeps its paused
 * copy. Commit: resumeArrived runs it at the destination. Abort: discardArrived removes the arrival
 * and resumeHere runs the source's copy again, and the guest itself answers there.
 */
import type { MigrationOptions, MigrationResult } from "../../lib/hypervisor/driver";
import { freePort } from "../../lib/hypervisor/net";
import { guestVm, type GuestFiles } from "../../lib/guest/guest";
import { hostsRunning, type Hosts } from "../harness/hosts";
import { booted, guestUptime, qemuHostsPerTest, qemuStatus, SECRET } from "./group-qemu";

jest.setTimeout(50_000);

const committing: MigrationOptions = {
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 30,
  pauseBeforeSwitchover: true,
  awaitCommit: true,
};

const lab = qemuHostsPerTest();
let hosts: Hosts;
const guest = (): GuestFiles => lab.guest();

/** vm1 moved dc1 -> dc2 as a group of one under group commit, up to the decision. */
async function moveHeld(): Promise<MigrationResult> {
  const armed = await hosts.dc2.arm("vm1", { address: "127.0.0.1", secret: SECRET, holdOnArrival: true });
  const handle = hosts.dc1.migrate("vm1", { uri: armed.uri, secret: SECRET }, committing);
  await handle.readyToSwitch;
  await handle.prime();
  await handle.stop();
  await hosts.dc2.announce("vm1"); // the network learns the destination while both copies are paused
  await handle.switchover();
  const result = await handle.done;
  await hosts.dc2.waitArrived("vm1", 10_000);
  return result;
}

/** Both copies paused, neither runs by itself: the source's after completion, the destination's held (-S). */
async function expectBothPaused(): Promise<void> {
  expect(await qemuStatus(hosts.dc1, "vm1")).toBe("postmigrate");
  expect(await qemuStatus(hosts.dc2, "vm1")).toBe("paused");
  expect(await hosts.dc2.state("vm1")).toBe("arrived");
  expect(await hosts.dc1.state("vm1")).toBe("stopped");
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc1", "dc2"]);
}

test("commit: the arrival waits paused, also for a restarted agent, until resumeArrived runs it", async () => {
  hosts = lab.make([guestVm(guest(), "vm1")]);
  await hosts.dc1.start("vm1");
  const result = await moveHeld();
  expect(result.continuedAt).toBeGreaterThanOrEqual(result.stoppedAt as number);
  await expectBothPaused();
  await new Promise((r) => setTimeout(r, 500));
  expect(await qemuStatus(hosts.dc2, "vm1")).toBe("paused"); // still: nothing runs it but the decision
  const restarted = hosts.reopen("dc2"); // decided from QEMU and the run dir, not from the driver's memory
  expect(await restarted.state("vm1")).toBe("arrived");
  await expect(restarted.disarm("vm1")).rejects.toMatchObject({ status: 486 });
  await expect(hosts.dc1.settleOrphanedMigration("vm1", { keepStopped: true })).resolves.toMatch(/kept paused/);
  expect(await qemuStatus(hosts.dc1, "vm1")).toBe("postmigrate");
  const t0 = Date.now();
  await restarted.resumeArrived("vm1");
  console.log(`resumeArrived: ${Date.now() - t0} ms; QEMU downtime ${result.downtimeMs} ms (to its own stop)`);
  expect(await qemuStatus(hosts.dc2, "vm1")).toBe("running");
  expect(await restarted.state("vm1")).toBe("running");
  await expect(restarted.discardArrived("vm1")).rejects.toMatchObject({ status: 486 }); // it runs: never discarded
  await hosts.dc1.stop("vm1"); // commit at the source: its stale copy goes
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc2"]);
});

test("abort: discardArrived removes the arrival, resumeHere runs the source's copy and the guest answers", async () => {
  hosts = lab.make([
    guestVm(guest(), "vm1", { nics: [{ kind: "user", mac: "52:54:00:00:00:42" }], ip: "10.0.2.15/24" }),
  ]);
  await hosts.dc1.start("vm1");
  await booted(hosts.dc1, "vm1");
  const before = await guestUptime(hosts.dc1, "vm1", await freePort("127.0.0.1"));
  await moveHeld();
  await expectBothPaused();
  await expect(hosts.dc1.resumeArrived("vm1")).rejects.toMatchObject({ status: 409 }); // the source has no arrival
  await hosts.dc2.discardArrived("vm1");
  expect(await hosts.dc2.state("vm1")).toBe("absent");
  expect(hostsRunning(hosts, "vm1")).toEqual(["dc1"]);
  await hosts.dc1.resumeHere("vm1");
  expect(await qemuStatus(hosts.dc1, "vm1")).toBe("running");
  expect(await hosts.dc1.state("vm1")).toBe("running");
  // the same guest, not a new boot: its uptime went on from before the move
  const after = await guestUptime(hosts.dc1, "vm1", await freePort("127.0.0.1"));
  expect(after).toBeGreaterThan(before);
});
