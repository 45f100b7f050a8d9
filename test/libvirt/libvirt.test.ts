/**
 * The libvirt driver end to end over SIP, against two real libvirtd instances (hosts.ts): exp2
 * as libvirt domains moves dc1 -> dc2 and back (the way back as a whole-group switchover);
 * with a QEMU VM in the same group; refusals; the armed port's limits. Faults are in
 * libvirt-faults.test.ts. Every test ends with the invariant, asked of libvirt itself: each domain
 * runs on exactly one host.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import execa from "execa";
import type { MigrationProgress, VmDefinition } from "../../lib/hypervisor/driver";
import { LibvirtDriver } from "../../lib/hypervisor/libvirt";
import { parseTcpUri } from "../../lib/hypervisor/libvirt-migration";
import { openTunnel } from "../../lib/hypervisor/libvirt-tunnel";
import { guestDefs, placement, refusal, startPair } from "../harness";
import { capturingLogger } from "../security/fault-report";
import { defineDomain, domainPlacement, domainXml, libvirtVms, type LibvirtLab } from "./hosts";
import { boot, labPerFile, policy } from "./lab-per-file";

jest.setTimeout(120_000);

const f = labPerFile();
let lab: LibvirtLab;
beforeAll(() => (lab = f.lab()));

describe("libvirt driver over SIP (two libvirtd in their own namespaces)", () => {
  it("moves exp2 as libvirt domains plus a QEMU VM dc1 -> dc2, and back as a whole-group switchover", async () => {
    const names = ["lv-router1", "lv-video"];
    const lv = await libvirtVms(lab, [
      ["lv-video", "server"],
      ["lv-router1", "router"],
    ]);
    // one QEMU VM in the same dialog: each VM moves with its own driver
    const [qemu] = await guestDefs([["q-mixed", "server"]], { driver: "qemu" });
    const pair = f.keep(
      await startPair([qemu, ...lv.dc1], {
        dc1: { inventory: [qemu, ...lv.dc1] },
        dc2: { inventory: [qemu, ...lv.dc2] },
      }),
    );
    await boot(pair, [...names, "q-mixed"]);
    expect(await domainPlacement(lab, names)).toEqual({ "lv-router1": ["dc1"], "lv-video": ["dc1"] });
    const progress: MigrationProgress[] = [];
    const started: string[] = [];
    const there = await pair.dc1.agent.migrate(
      { to: pair.dc2.uri, vms: [...names, "q-mixed"], policy: { ...policy, bandwidthMbps: 400 } },
      { onStart: (vm) => started.push(vm), onProgress: (p) => progress.push(p) },
    );
    expect(started[0]).toBe("lv-router1"); // the network function first
    expect(there.outcome).toBe("completed");
    for (const v of there.vms) {
      expect(v.state).toBe("completed");
      expect(v.totalMs).toBeGreaterThan(0);
      expect(v.downtimeMs).toBeGreaterThanOrEqual(0);
      expect(v.transferredBytes).toBeGreaterThan(1 << 20);
    }
    expect(progress.some((p) => p.vm === "lv-video" && p.phase === "active" && p.progress > 0 && p.progress < 1)).toBe(
      true,
    );
    // the destination saw the same: its report in the 200 to our BYE (libvirt's byte counts are whole numbers)
    expect(there.destinationReport?.outcome).toBe("completed");
    expect(there.destinationReport?.results.map((r) => [r.vm, r.state, r.host])).toEqual([
      ["lv-router1", "completed", "dc2"],
      ["lv-video", "completed", "dc2"],
      ["q-mixed", "completed", "dc2"],
    ]);
    expect(await domainPlacement(lab, names)).toEqual({ "lv-router1": ["dc2"], "lv-video": ["dc2"] });
    expect(placement(pair)["q-mixed"]).toEqual(["dc2"]);
    expect(await pair.dc1.host.find("lv-video")?.driver.state("lv-video")).toBe("stopped");
    expect(await pair.dc2.host.find("lv-video")?.driver.state("lv-video")).toBe("running");

    // and back, dc2's agent calling dc1's, as one switchover: both stop together (suspended by the driver)
    const back = await startPair(lv.dc2, { dc1: { inventory: lv.dc2 }, dc2: { inventory: lv.dc1 } });
    try {
      const home = await back.dc1.agent.migrate({
        to: back.dc2.uri,
        vms: names,
        policy: { ...policy, strategy: "switchover", maxParallel: 2 },
      });
      expect(home.outcome).toBe("completed");
      expect(home.destinationReport?.outcome).toBe("completed");
      // libvirt cannot hold a VM that converges on its own first; when the driver stopped them, the group's pause
      if (home.groupDowntimeMs !== undefined) expect(home.groupDowntimeMs).toBeGreaterThanOrEqual(0);
    } finally {
      await back.close();
    }
    expect(await domainPlacement(lab, names)).toEqual({ "lv-router1": ["dc1"], "lv-video": ["dc1"] });
    // the first dialog's end closed dc2's armed port for what arrived: its agent would take the VM again
    for (const vm of names) expect(await pair.dc2.host.find(vm)?.driver.state(vm)).toBe("stopped");
  });

  it("runs the lab's guests with RAM past libvirt's whole MiB (QEMU 7.2 loses TCG writes otherwise)", async () => {
    await libvirtVms(lab, [["lv-padded", "server"]]);
    await lab.dc1.virsh.run(["start", "lv-padded"]);
    const summary = JSON.parse(
      await lab.dc1.virsh.run(["qemu-monitor-command", "lv-padded", '{"execute":"query-memory-size-summary"}']),
    ) as { return: { "base-memory": number } };
    await lab.dc1.virsh.run(["destroy", "lv-padded"]);
    // libvirt defines 96 MiB, a multiple of 256 KiB: the size at which QEMU < 9.0 corrupts a TCG guest
    expect(summary.return["base-memory"]).toBe(96 * 2 ** 20 + 8192);
    expect(summary.return["base-memory"] % (256 * 1024)).not.toBe(0);
  });

  it("refuses with 488 and a reason per domain it cannot receive, and changes nothing", async () => {
    const names = ["lv-bigmem", "lv-undefined", "lv-busy", "lv-copydisk"];
    const lv = await libvirtVms(lab, [
      ["lv-bigmem", "server"],
      ["lv-undefined", "server"],
      ["lv-busy", "server"],
      ["lv-copydisk", "server"],
    ]);
    // lv-copydisk's inventory says to copy a disk its domain does not have, onto a file dc2 has already
    const image = path.join(lab.dc1.dir, "copydisk.raw");
    fs.writeFileSync(image, Buffer.alloc(1 << 20));
    const disk = { target: "vda", file: image, format: "raw" as const, mode: "copy" as const };
    const withDisk = (defs: VmDefinition[]) =>
      defs.map((d) => (d.name === "lv-copydisk" ? { ...d, disks: [disk] } : d));
    const pair = f.keep(
      await startPair(withDisk(lv.dc1), {
        dc1: { inventory: withDisk(lv.dc1) },
        dc2: { inventory: withDisk(lv.dc2) },
      }),
    );
    // dc2's lv-bigmem has other memory; dc2 forgets lv-undefined; lv-busy already runs on dc2
    await lab.dc2.virsh.run(["undefine", "lv-bigmem"]);
    await defineDomain(lab.dc2, domainXml(lab.guest, "lv-bigmem", crypto.randomUUID(), 128));
    await lab.dc2.virsh.run(["undefine", "lv-undefined"]);
    await boot(pair, ["lv-bigmem", "lv-undefined", "lv-copydisk"]);
    await lab.dc2.virsh.run(["start", "lv-busy"]);
    const before = await domainPlacement(lab, names);
    const err = await refusal(pair.dc1.agent.migrate({ to: pair.dc2.uri, vms: ["lv-bigmem", "lv-undefined"], policy }));
    expect(err.status).toBe(488);
    expect(err.message).toMatch(/lv-bigmem: domain lv-bigmem has 128 MiB, the offer 96 MiB/);
    expect(err.message).toMatch(/lv-undefined: libvirt at .* does not define domain lv-undefined/);
    const copy = await refusal(pair.dc1.agent.migrate({ to: pair.dc2.uri, vms: ["lv-copydisk"], policy }));
    expect(copy.status).toBe(488);
    // the image's path is taken here (both hosts' inventories name the one file), and the domain has no vda
    expect(copy.message).toMatch(/lv-copydisk: disk vda: .*copydisk\.raw exists already on this host/);
    expect(copy.message).toMatch(/disk vda: domain lv-copydisk has no such disk here/);
    await pair.dc1.host.find("lv-busy")?.driver.start("lv-busy"); // now it would run twice: refused
    const busy = await refusal(pair.dc1.agent.migrate({ to: pair.dc2.uri, vms: ["lv-busy"], policy }));
    expect(busy.status).toBe(488);
    expect(busy.message).toMatch(/lv-busy: already running on this host/);
    await lab.dc1.virsh.run(["destroy", "lv-busy"]);
    expect(await domainPlacement(lab, names)).toEqual(before);
  });

  it("armed port: wrong secret, second connection refused; the admitted one moves the armed domain only", async () => {
    const defs = await libvirtVms(lab, [
      ["lv-gate", "server"],
      ["lv-other", "server"],
    ]);
    const log = capturingLogger();
    const runDir = fs.mkdtempSync(path.join(lab.dc1.dir, "gate-"));
    // tunnelled, the choice kept for an agent that cannot create sockets in libvirtd's run folder
    const dc1 = new LibvirtDriver({ runDir: path.join(runDir, "dc1"), inventory: defs.dc1, stream: "tunnelled" });
    const dc2 = new LibvirtDriver({ runDir: path.join(runDir, "dc2"), inventory: defs.dc2, logger: log.logger });
    const secret = crypto.randomBytes(32).toString("base64url");
    const through = async (s: string, args: string[]) => {
      const tunnel = await openTunnel(host, port, s, path.join(runDir, `t-${crypto.randomBytes(3).toString("hex")}`));
      try {
        return await execa("virsh", ["-c", `qemu+unix:///system?socket=${tunnel.socket}`, ...args], { reject: false });
      } finally {
        await tunnel.close();
      }
    };
    // 1. the secret is for lv-gate: migrating lv-other (defined on dc2 too) through its port is refused
    await dc1.start("lv-other");
    let armed = await dc2.arm("lv-gate", { address: "127.0.0.1", secret });
    let { host, port } = parseTcpUri(armed.uri);
    const other = await refusal(dc1.migrate("lv-other", { uri: armed.uri, secret }, policy).done);
    expect(other.status).toBe(503);
    expect(log.lines.join("")).toMatch(/PREPARE_TUNNEL3_PARAMS: the domain XML is domain lv-other, armed for lv-gate/);
    expect(await domainPlacement(lab, ["lv-other", "lv-gate"])).toEqual({ "lv-other": ["dc1"], "lv-gate": [] });
    // that connection was the dialog's one: the port is closed now
    const second = await new Promise<string>((resolve) =>
      net
        .connect(port, host)
        .once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? ""))
        .once("connect", () => resolve("connected")),
    );
    expect(second).toBe("ECONNREFUSED");
    await dc2.disarm("lv-gate");

    // 2. a wrong secret gets nothing, and does not use up the port; the right one may not list domains
    armed = await dc2.arm("lv-gate", { address: "127.0.0.1", secret });
    ({ host, port } = parseTcpUri(armed.uri));
    const wrong = await through("not-the-secret", ["list", "--all"]);
    expect(wrong.exitCode).not.toBe(0);
    expect(log.lines.join("")).toMatch(/TLS handshake failed/);
    const listed = await through(secret, ["list", "--all"]);
    expect(listed.exitCode).not.toBe(0);
    expect(listed.stdout).not.toMatch(/lv-gate/);
    expect(log.lines.join("")).toMatch(/procedure \d+ is not part of a migration/);
    await dc2.disarm("lv-gate");
    await lab.dc1.virsh.run(["destroy", "lv-other"]);
  });
});
