/**
 * The libvirt driver over SIP when things go wrong, against two real libvirtd instances: abort,
 * libvirtd restarted mid-dialog, either agent killed mid-migration. Each ends with every domain
 * on exactly one host, asked of libvirt itself.
 */
import { runCli } from "../e2e/cli-process";
import { configFile } from "../harness";
import { until } from "../security/fault-report";
import { domainPlacement, type LibvirtLab } from "./hosts";
import { boot, journal, labPerFile, policy } from "./lab-per-file";

jest.setTimeout(120_000);

const f = labPerFile();
let lab: LibvirtLab;
beforeAll(() => (lab = f.lab()));

describe("libvirt driver over SIP: faults (two libvirtd in their own namespaces)", () => {
  it("abort mid-migration: libvirt's job abort, the VM keeps running on dc1, nothing stays on dc2", async () => {
    const pair = await f.pairFor([["lv-abort", "server"]]);
    await boot(pair, ["lv-abort"]);
    const ac = new AbortController();
    const summary = await pair.dc1.agent.migrate(
      { to: pair.dc2.uri, vms: ["lv-abort"], policy: { ...policy, bandwidthMbps: 16 }, signal: ac.signal },
      { onProgress: (p) => p.transferredBytes > 4 << 20 && ac.abort() },
    );
    expect(summary.vms[0].state).toBe("aborted");
    expect(await domainPlacement(lab, ["lv-abort"])).toEqual({ "lv-abort": ["dc1"] });
    expect(await pair.dc2.host.find("lv-abort")?.driver.state("lv-abort")).toBe("stopped");
  });

  it("libvirtd of dc2 restarted mid-migration: whatever libvirt decides, the VM runs on exactly one host", async () => {
    const pair = await f.pairFor([["lv-restart", "server"]]);
    await boot(pair, ["lv-restart"]);
    let restarted: Promise<void> | undefined;
    const summary = await pair.dc1.agent.migrate(
      { to: pair.dc2.uri, vms: ["lv-restart"], policy: { ...policy, bandwidthMbps: 40 } },
      { onProgress: (p) => p.transferredBytes > 2 << 20 && (restarted ??= lab.dc2.restart()) },
    );
    await restarted;
    expect(restarted).toBeDefined();
    const where = (await domainPlacement(lab, ["lv-restart"]))["lv-restart"];
    expect(where).toHaveLength(1);
    // the report tells the truth about where it runs
    expect(summary.vms[0].state === "completed" ? ["dc2"] : ["dc1"]).toEqual(where);
  });

  it("source agent killed mid-migration: its tunnel dies with it, the VM stays on dc1, dc2 disarms", async () => {
    const pair = await f.pairFor([["lv-srckill", "server"]], { dc2: { timers: { idleTimeoutS: 2 } } });
    await boot(pair, ["lv-srckill"]);
    const source = runCli([
      "migrate",
      "-c",
      configFile(pair, "dc1"),
      "--to",
      pair.dc2.uri,
      "--bandwidth-mbps",
      "8",
      "lv-srckill",
    ]);
    f.track(source);
    await source.waitFor(/lv-srckill: migration started/);
    await until("dc2 receives", async () => (await lab.dc2.virsh.run(["list", "--name"])).includes("lv-srckill"));
    source.child.kill("SIGKILL");
    // libvirt's source resumes; the incoming copy on dc2 waits until dc2's idle timer disarms it
    await until("on dc1 only", async () => (await domainPlacement(lab, ["lv-srckill"]))["lv-srckill"].join() === "dc1");
    await until("dc2 disarmed (idle timeout)", () => journal(pair).length === 0);
    expect(await pair.dc1.host.find("lv-srckill")?.driver.state("lv-srckill")).toBe("running");
    expect(await pair.dc2.host.find("lv-srckill")?.driver.state("lv-srckill")).toBe("stopped");
  });

  it("destination agent killed mid-migration: the source reports the failure, the VM runs on dc1", async () => {
    const pair = await f.pairFor([["lv-dstkill", "server"]], { transport: "tcp", destination: false });
    await boot(pair, ["lv-dstkill"]);
    const listen = async () => {
      const dest = runCli(["listen", "-c", configFile(pair, "dc2")]);
      f.track(dest);
      await dest.waitFor(/listening as/);
      return dest;
    };
    const dest = await listen();
    let killed = false;
    const summary = await pair.dc1.agent.migrate(
      { to: pair.dc2.uri, vms: ["lv-dstkill"], policy: { ...policy, bandwidthMbps: 8 } },
      { onProgress: (p) => p.transferredBytes > 1 << 20 && !killed && (killed = dest.child.kill("SIGKILL")) },
    );
    expect(killed).toBe(true);
    expect(summary.vms[0]).toMatchObject({ vm: "lv-dstkill", state: "failed", host: "dc1" });
    expect(await domainPlacement(lab, ["lv-dstkill"])).toEqual({ "lv-dstkill": ["dc1"] });
    expect(journal(pair)).toHaveLength(1);
    await listen();
    expect(journal(pair)).toEqual([]);
    expect(await domainPlacement(lab, ["lv-dstkill"])).toEqual({ "lv-dstkill": ["dc1"] });
  });
});
