/**
 * Issue #23 point 2: a holder of the dialog's secret, speaking libvirt's RPC itself through the
 * armed port, against a real libvirtd. Each hostile PREPARE is refused by the gate (the connection
 * closes, the reason is logged) and starts nothing: no new domain, no QEMU process, the armed
 * domain still shut off, libvirtd still answering. One lab for the file (two libvirtd).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { LibvirtDriver } from "../../lib/hypervisor/libvirt";
import { parseTcpUri } from "../../lib/hypervisor/libvirt-migration";
import { RpcGate } from "../../lib/hypervisor/libvirt-rpc-gate";
import { openTunnel } from "../../lib/hypervisor/libvirt-tunnel";
import { libvirtVms, startLibvirtLab, type LibvirtLab } from "../libvirt/hosts";
import { capturingLogger } from "./fault-report";
import { openConnection, prepareCall, rpcCall, rpcPeer, xdrString, type Outcome } from "./libvirt-rpc";

jest.setTimeout(60_000);

const VM = "lvh";
let lab: LibvirtLab;
let driver: LibvirtDriver;
let log: ReturnType<typeof capturingLogger>;
/** What libvirt on dc1 sends for the VM (its running domain's migratable definition). */
let honest: string;
let uuid: string;
let runDir: string;

/** A cookie like libvirt's: a C string (libvirtd refuses one without its NUL). */
const cookie = (name = VM, id = uuid) =>
  `<qemu-migration>\n  <name>${name}</name>\n  <uuid>${id}</uuid>\n  <hostname>elsewhere</hostname>\n` +
  `  <hostuuid>${crypto.randomUUID()}</hostuuid>\n  <feature name='lockstate'/>\n</qemu-migration>\n\0`;

beforeAll(async () => {
  lab = await startLibvirtLab();
  const defs = await libvirtVms(lab, [[VM, "server"]]);
  await lab.dc1.virsh.run(["start", VM]);
  honest = await lab.dc1.virsh.run(["dumpxml", "--migratable", VM]);
  uuid = /<uuid>([^<]+)<\/uuid>/.exec(honest)?.[1] ?? "";
  runDir = fs.mkdtempSync(path.join(lab.dc2.dir, "hostile-"));
  log = capturingLogger();
  driver = new LibvirtDriver({ runDir, inventory: defs.dc2, logger: log.logger });
});
afterAll(async () => lab?.close());

const owned = () => path.join(lab.dc2.dir, "owned-by-qemu");
const qemuPids = () => {
  const dir = path.join(lab.dc2.dir, "run", "qemu");
  // one pid file per running domain (driver.pid is libvirt's own)
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith(".pid") && f !== "driver.pid") : [];
};

/** Arm the VM on dc2, send the calls through its port as the secret's holder; what the PREPARE got. */
async function throughArmedPort(
  prepare: Buffer,
  trailer?: Buffer,
): Promise<{ outcome: Outcome; refused: string; libvirtError: string; qemuAtAnswer: string[] }> {
  const secret = crypto.randomBytes(32).toString("base64url");
  const armed = await driver.arm(VM, { address: "127.0.0.1", secret });
  const { host, port } = parseTcpUri(armed.uri);
  const tunnel = await openTunnel(host, port, secret, path.join(runDir, `t-${crypto.randomBytes(3).toString("hex")}`));
  const mark = log.lines.length;
  try {
    const peer = await rpcPeer(tunnel.socket);
    await openConnection(peer);
    const pending = peer.call(prepare, 5000);
    if (trailer) peer.send(trailer);
    const outcome = await pending;
    // before the connection goes (libvirt then tears down what it prepared): did a QEMU start?
    const qemuAtAnswer = qemuPids();
    peer.end();
    const refused = log.lines
      .slice(mark)
      .map((l) => JSON.parse(l) as { message: string; reason?: string })
      .filter((l) => l.message.startsWith("refused on the armed port"))
      .map((l) => l.reason)
      .join("\n");
    return { outcome, refused, libvirtError: peer.lastError(), qemuAtAnswer };
  } finally {
    await tunnel.close();
    await driver.disarm(VM).catch(() => undefined);
  }
}

async function expectNothingStarted(): Promise<void> {
  const names = (await lab.dc2.virsh.run(["list", "--all", "--name"])).split("\n").filter(Boolean);
  expect(names).toEqual([VM]);
  expect((await lab.dc2.virsh.domState(VM))?.state).toBe("shut off");
  expect(qemuPids()).toEqual([]);
  expect(fs.existsSync(owned())).toBe(false);
}

const afterEmulator = (xml: string, device: string) => xml.replace(/(<\/emulator>)/, `$1\n    ${device}`);

const hostile: Array<[string, () => Array<[string, string]>, () => string, RegExp]> = [
  [
    "a second <name> (and <uuid>) hidden in a comment",
    () => [
      [
        "destination_xml",
        honest.replace(
          /<name>[^<]*<\/name>\s*<uuid>[^<]*<\/uuid>/,
          `<!-- <name>${VM}</name><uuid>${uuid}</uuid> --><name>lvh-evil</name><uuid>${crypto.randomUUID()}</uuid>`,
        ),
      ],
    ],
    () => cookie("lvh-evil", crypto.randomUUID()),
    /the domain XML is domain lvh-evil, armed for lvh/,
  ],
  [
    "a disk whose source is double-quoted",
    () => [
      [
        "destination_xml",
        afterEmulator(
          honest,
          `<disk type="file" device="disk"><driver name="qemu" type="raw"/>` +
            `<source file="${path.join(lab.dc2.dir, "not-this-vms.img")}"/><target dev="vda" bus="virtio"/></disk>`,
        ),
      ],
    ],
    () => cookie(),
    /names host resources the definition here does not: disk type="file" <source file=".*not-this-vms\.img">/,
  ],
  [
    "a <filesystem> of /",
    () => [
      [
        "destination_xml",
        afterEmulator(
          honest,
          "<filesystem type='mount' accessmode='passthrough'><source dir='/'/><target dir='hostroot'/></filesystem>",
        ),
      ],
    ],
    () => cookie(),
    /names host resources the definition here does not: filesystem type="mount" <source dir="\/">/,
  ],
  [
    "a <hostdev>",
    () => [
      [
        "destination_xml",
        afterEmulator(
          honest,
          "<hostdev mode='subsystem' type='usb' managed='no'><source><vendor id='0x1d6b'/>" +
            "<product id='0x0002'/></source></hostdev>",
        ),
      ],
    ],
    () => cookie(),
    /names host resources the definition here does not: hostdev type="usb"/,
  ],
  [
    "a <qemu:commandline>",
    () => [
      [
        "destination_xml",
        honest
          .replace(
            "<domain type='qemu'>",
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
          )
          .replace(
            "</domain>",
            `<qemu:commandline><qemu:arg value='-chardev'/><qemu:arg value='file,id=own,path=${owned()}'/>` +
              "</qemu:commandline></domain>",
          ),
      ],
    ],
    () => cookie(),
    /uses another XML vocabulary \(the attribute xmlns:qemu at \/domain\)/,
  ],
  [
    "destination_xml twice: a hostile one first (libvirt reads the first), the honest one after",
    () => [
      [
        "destination_xml",
        afterEmulator(honest, "<filesystem type='mount'><source dir='/'/><target dir='hostroot'/></filesystem>"),
      ],
      ["destination_xml", honest],
    ],
    () => cookie(),
    /parameter destination_xml is repeated/,
  ],
];

describe("the armed libvirt port against a hostile holder of the secret (real libvirtd)", () => {
  it("an honest PREPARE through the same client is prepared by libvirtd (the client is real)", async () => {
    const { outcome, refused, libvirtError, qemuAtAnswer } = await throughArmedPort(
      prepareCall(3, [["destination_xml", honest]], cookie()),
    );
    expect(refused).toBe("");
    expect([outcome, libvirtError]).toEqual([0, ""]);
    expect(qemuAtAnswer).toHaveLength(1); // libvirtd started the incoming QEMU
    // the connection is gone: libvirt (or disarm) removes the incoming copy
    for (let i = 0; i < 100 && qemuPids().length; i++) await new Promise((r) => setTimeout(r, 100));
    await expectNothingStarted();
  });

  it.each(hostile)("refuses %s and starts nothing", async (_what, params, cookieXml, reason) => {
    const { outcome, refused, qemuAtAnswer } = await throughArmedPort(prepareCall(3, params(), cookieXml()));
    expect(refused).toMatch(reason);
    expect(outcome).toBe("closed");
    expect(qemuAtAnswer).toEqual([]);
    await expectNothingStarted();
  });

  it("refuses a call declaring more than a migration call can hold, before buffering it", async () => {
    const declared = 32 * 1024 * 1024; // libvirt's own message limit: within it, but no definition is that big
    const head = rpcCall(304, 3, xdrString("x"), declared);
    const { outcome, refused } = await throughArmedPort(head, Buffer.alloc(1 << 20));
    expect(refused).toMatch(/a migration call of 33554432 bytes/);
    expect(outcome).toBe("closed");
    await expectNothingStarted();
  });

  it("refuses a PREPARE without a migration cookie (libvirtd 9.0 was seen to crash on it)", async () => {
    const { outcome, refused } = await throughArmedPort(prepareCall(3, [["destination_xml", honest]], ""));
    expect(refused).toMatch(/carries no migration cookie/);
    expect(outcome).toBe("closed");
    expect(await lab.dc2.virsh.run(["version", "--daemon"])).toMatch(/libvirt/); // still up
    await expectNothingStarted();
  });
});

describe("the gate's cost on a 32 MiB call", () => {
  it("refuses it on its first 64 KiB, holding nothing; figures printed", () => {
    // a check that admits anything: what is measured is the framing's cost before any check runs
    const padded = (n: number) => honest.replace("</domain>", `<description>${"x".repeat(n)}</description></domain>`);
    const bare = prepareCall(3, [["destination_xml", padded(0)]], cookie()).length;
    const call = prepareCall(3, [["destination_xml", padded((32 << 20) - bare)]], cookie());
    expect(call.length).toBe(32 << 20); // libvirt's own limit
    // the least of 20 refusals: process.cpuUsage counts every thread (GC, other tests' leftovers) too
    let cpuMs = Infinity;
    let ms = Infinity;
    let refusedAt = -1;
    for (let round = 0; round < 20; round++) {
      const gate = new RpcGate(() => undefined);
      const cpu = process.cpuUsage();
      const started = process.hrtime.bigint();
      refusedAt = -1;
      for (let at = 0, i = 0; at < call.length; at += 65536, i++) {
        try {
          gate.push(call.subarray(at, at + 65536));
        } catch {
          refusedAt = i;
          break;
        }
      }
      const used = process.cpuUsage(cpu);
      cpuMs = Math.min(cpuMs, (used.user + used.system) / 1000);
      ms = Math.min(ms, Number(process.hrtime.bigint() - started) / 1e6);
      if (refusedAt !== 0) break;
    }
    process.stdout.write(
      `gate on a ${call.length}-byte PREPARE in 64 KiB chunks: refused at chunk ${refusedAt}, ` +
        `${cpuMs.toFixed(1)} ms CPU, ${ms.toFixed(1)} ms wall (least of 20)\n`,
    );
    expect(refusedAt).toBe(0);
    expect(cpuMs).toBeLessThan(50);
  });
});
