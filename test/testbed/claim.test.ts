/**
 * The destination's claim of a paused VM's MACs (QemuDriver.claimNetwork, lib/net/host-announce.c)
 * on the testbed's network: with every switch still sending the VM's frames to the other data
 * center (as they do while its source copy runs there), pings sent to the paused VM are lost; once
 * its host claimed the MAC, they wait in its tap and are all answered when it runs. QEMU's own
 * announce cannot do this: a paused QEMU holds its RARPs back until it runs. Needs root and QEMU.
 */
import execa from "execa";
import { ensureGuest } from "../../lib/guest/guest";
import { HostAnnouncer } from "../../lib/net/host-announcer";
import { QmpClient } from "../../lib/hypervisor/qmp";
import { EXPERIMENT, hostAddress } from "./experiments";
import { Lab } from "./lab";
import { tapName } from "./network";

const asRoot = process.getuid?.() === 0 ? describe : describe.skip;
const GUEST = EXPERIMENT.exp1.guests[0];

asRoot("claiming a paused VM's MACs at its host's bridge", () => {
  let lab: Lab | undefined;
  let qmp: QmpClient | undefined;

  beforeAll(async () => {
    lab = await Lab.create({ ...EXPERIMENT.exp1, guests: [GUEST] }, await ensureGuest());
    await lab.bootAll();
    qmp = await QmpClient.connect(lab.driver("dc1").files(GUEST.name).qmp);
  }, 120_000);

  afterAll(async () => {
    await qmp?.close();
    await lab?.destroy();
  }, 30_000);

  const inNs = (where: "dc1" | "sw" | "user", cmd: string[]) => {
    const ns = lab!.net.exec(where);
    return execa(ns[0], [...ns.slice(1), ...cmd]);
  };
  const mac = () => lab!.inventory("dc1")[0].nics[0].mac;

  /** The switches as they are while the VM's other copy runs in dc2: its frames go there. */
  async function pointAway(): Promise<void> {
    await inNs("dc1", ["bridge", "fdb", "replace", mac(), "dev", "uplink", "master", "dynamic"]);
    await inNs("sw", ["bridge", "fdb", "replace", mac(), "dev", "p-dc2", "master", "dynamic"]);
  }

  /** Five pings sent while the VM is paused, then it runs: how many were answered. */
  async function pingsAcrossPause(claim?: () => Promise<void>): Promise<number> {
    await qmp!.execute("stop");
    await pointAway();
    await claim?.();
    // exactly five sent (no deadline: with one, ping sends on until five are answered); answers waited 3 s
    const ping = inNs("user", ["ping", "-n", "-c", "5", "-i", "0.1", "-W", "3", hostAddress(GUEST)]).catch(
      (err: { stdout?: string }) => ({ stdout: err.stdout ?? "" }),
    );
    await new Promise((r) => setTimeout(r, 800)); // all five sent, none can be answered yet
    await qmp!.execute("cont");
    const { stdout } = await ping;
    return Number(/(\d+) received/.exec(stdout)?.[1] ?? -1);
  }

  beforeEach(async () => {
    // the user cannot resolve a paused VM's address: it knows it already, as it would mid-conversation
    await inNs("user", ["ip", "neigh", "replace", hostAddress(GUEST), "lladdr", mac(), "dev", "uplink"]);
  });

  it("without a claim, the frames sent to the paused VM go where the switches think it is: lost", async () => {
    expect(await pingsAcrossPause()).toBe(0);
    // where it really is, for the next case (a quiet guest may not say so itself for long)
    await inNs("dc1", ["bridge", "fdb", "replace", mac(), "dev", tapName(GUEST.name, "dc1"), "master", "dynamic"]);
    await inNs("sw", ["bridge", "fdb", "replace", mac(), "dev", "p-dc1", "master", "dynamic"]);
    await lab!.waitAllPing(20_000);
  }, 60_000);

  it("once its host claimed the MAC, they wait in its tap and are all answered when it runs", async () => {
    // in dc1's namespace, where its agent runs (this process, the lab's driver, is not in it)
    const announcer = await HostAnnouncer.start(lab!.net.exec("dc1"));
    try {
      expect(await pingsAcrossPause(() => announcer.claim(tapName(GUEST.name, "dc1"), mac()))).toBe(5);
    } finally {
      announcer.close();
    }
    const fdb = await inNs("dc1", ["bridge", "fdb", "show", "br", "br0"]);
    expect(fdb.stdout).toContain(`${mac()} dev ${tapName(GUEST.name, "dc1")} master br0`);
  }, 60_000);

  it("refuses a tap that is not a bridge port, and a malformed line, naming both", async () => {
    const announcer = await HostAnnouncer.start();
    try {
      await expect(announcer.claim("lo", mac())).rejects.toThrow(/lo is not a port of a bridge/);
      await expect(announcer.claim("lo", "not-a-mac")).rejects.toThrow(/not a MAC address: not-a-mac/);
      await expect(announcer.claim("no-such-tap", mac())).rejects.toThrow(/no-such-tap/);
    } finally {
      announcer.close();
    }
  });
});
