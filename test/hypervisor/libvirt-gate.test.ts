/**
 * The libvirt pieces that need no daemon: the RPC gate in front of the armed port (framing split
 * anywhere, procedures outside a migration, the domain a migration call carries) and domjobinfo's
 * figures as whole numbers (NRDL carries integers; fractions of a byte once cost the BYE's report).
 */
import { incomingDomainCheck } from "../../lib/hypervisor/libvirt-incoming";
import { KEEPALIVE_PROGRAM, REMOTE_PROGRAM, RpcGate } from "../../lib/hypervisor/libvirt-rpc-gate";
import { parseDomainXml, parseJobInfo } from "../../lib/hypervisor/virsh";

const xdrString = (s: string): Buffer => {
  const b = Buffer.from(s, "utf8");
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
};

function message(prog: number, proc: number, type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(28);
  head.writeUInt32BE(28 + payload.length, 0);
  head.writeUInt32BE(prog, 4);
  head.writeUInt32BE(1, 8);
  head.writeInt32BE(proc, 12);
  head.writeInt32BE(type, 16);
  return Buffer.concat([head, payload]);
}

const cookie = (name: string) =>
  `<qemu-migration><name>${name}</name><uuid>u-1</uuid><hostname>h</hostname><hostuuid>h-1</hostuuid></qemu-migration>`;

/** PREPARE_TUNNEL3_PARAMS with destination_xml and a cookie like libvirt's. */
function prepare(xml: string, cookieXml = cookie("web1")): Buffer {
  const count = Buffer.alloc(4);
  count.writeUInt32BE(1);
  const type = Buffer.alloc(4);
  type.writeUInt32BE(7);
  const flags = Buffer.alloc(4);
  return message(
    REMOTE_PROGRAM,
    304,
    0,
    Buffer.concat([count, xdrString("destination_xml"), type, xdrString(xml), xdrString(cookieXml), flags]),
  );
}

const domain = (name: string, emulator = "/usr/bin/qemu-system-x86_64") =>
  `<domain type='qemu'><name>${name}</name><uuid>u-1</uuid><memory unit='KiB'>98304</memory>` +
  `<devices><emulator>${emulator}</emulator></devices></domain>`;

/** Feed `bytes` in chunks of `size`; what was forwarded, or the refusal. */
function feed(gate: RpcGate, bytes: Buffer, size: number): Buffer | Error {
  const out: Buffer[] = [];
  try {
    for (let i = 0; i < bytes.length; i += size) out.push(...gate.push(bytes.subarray(i, i + size)));
  } catch (err) {
    return err as Error;
  }
  return Buffer.concat(out);
}

describe("native migration's prepare (the stream on the armed path only)", () => {
  const uri = "unix:///run/libvirt/qemu/st-0123456789abcdef0123.sock";
  const call = (params: Array<[string, string]>) => ({
    procedure: 303,
    params: new Map([["destination_xml", domain("web1")], ...params]),
    cookie: cookie("web1"),
  });

  it("passes the armed domain with the armed URI; refuses another URI, none, or a tunnelled-only host", () => {
    const armed = incomingDomainCheck("web1", parseDomainXml(domain("web1")), uri);
    expect(armed(call([["migrate_uri", uri]]))).toBeUndefined();
    expect(armed(call([["migrate_uri", "unix:///tmp/x.sock"]]))).toMatch(
      /asks QEMU to listen on unix:\/\/\/tmp\/x.sock/,
    );
    // without migrate_uri libvirtd would have QEMU listen on a TCP port of its choice, past the agents
    expect(armed(call([]))).toMatch(/a port of libvirtd's choice/);
    expect(
      armed(
        call([
          ["migrate_uri", uri],
          ["listen_address", "0.0.0.0"],
        ]),
      ),
    ).toMatch(/parameter listen_address/);
    const tunnelledOnly = incomingDomainCheck("web1", parseDomainXml(domain("web1")));
    expect(tunnelledOnly(call([["migrate_uri", uri]]))).toMatch(/armed for tunnelled only/);
    expect(
      armed({
        ...call([]),
        procedure: 304,
        params: new Map([
          ["destination_xml", domain("web1")],
          ["migrate_uri", uri],
        ]),
      }),
    ).toMatch(/parameter migrate_uri/);
  });
});

describe("native migration's disk copy (the armed disks onto the armed NBD path only)", () => {
  const uri = "unix:///run/libvirt/qemu/st-0123456789abcdef0123.sock";
  const nbd = "unix:///run/libvirt/qemu/nbd-0123456789abcdef0123.sock";
  const withNbd = (targets: string[]) =>
    cookie("web1").replace(
      "</qemu-migration>",
      `<nbd>${targets.map((t) => `<disk target='${t}' capacity='1048576'/>`).join("")}</nbd></qemu-migration>`,
    );
  const call = (disks: string[], disksUri: string | undefined, c = withNbd(disks)) => ({
    procedure: 303,
    params: new Map([
      ["destination_xml", domain("web1")],
      ["migrate_uri", uri],
      ...(disksUri ? [["disks_uri", disksUri] as [string, string]] : []),
    ]),
    disks,
    cookie: c,
  });
  const armed = incomingDomainCheck("web1", parseDomainXml(domain("web1")), uri, { uri: nbd, targets: ["vda"] });
  const unarmed = incomingDomainCheck("web1", parseDomainXml(domain("web1")), uri);

  it("passes the armed disks onto the armed path; refuses other disks, paths, or a copy nobody armed", () => {
    expect(armed(call(["vda"], nbd))).toBeUndefined();
    expect(armed(call(["vda"], undefined))).toMatch(/serve its disks on a port of libvirtd's choice/);
    expect(armed(call(["vda"], "unix:///tmp/n.sock"))).toMatch(/serve its disks on unix:\/\/\/tmp\/n.sock/);
    expect(armed(call(["vda", "vdb"], nbd))).toMatch(/copies disks vda, vdb, armed for vda/);
    expect(armed(call(["vda", "vda"], nbd, withNbd(["vda"])))).toMatch(/copies disks vda, vda/);
    // without migrate_disks libvirt would copy every disk it deems local
    expect(armed(call([], nbd, withNbd(["vda"])))).toMatch(/\(unnamed: every local one\)/);
    expect(armed(call(["vda"], nbd, withNbd(["vda", "vdb"])))).toMatch(/cookie copies disk vdb/);
    expect(unarmed(call(["vda"], nbd))).toMatch(/parameter disks_uri/);
    expect(unarmed(call([], undefined, withNbd(["vda"])))).toMatch(/a disk copy, which this dialog did not arm/);
    expect(armed(call([], undefined, withNbd(["vda"]).replace("capacity='1048576'", "capacity='x'")))).toMatch(
      /holds something other than <disk target capacity\/>/,
    );
  });
});

describe("libvirt RPC gate", () => {
  const check = incomingDomainCheck("web1", parseDomainXml(domain("web1")));
  const stream = Buffer.alloc(5000, 7);

  it.each([1, 5, 28, 4096, 1 << 20])("forwards a migration byte for byte, split in chunks of %i", (size) => {
    const flow = Buffer.concat([
      message(REMOTE_PROGRAM, 66, 0), // AUTH_LIST
      message(REMOTE_PROGRAM, 1, 0, xdrString("qemu:///system")), // CONNECT_OPEN
      message(KEEPALIVE_PROGRAM, 1, 2), // PING
      prepare(domain("web1")),
      message(REMOTE_PROGRAM, 304, 3, stream), // the migration stream
      message(REMOTE_PROGRAM, 2, 0), // CONNECT_CLOSE
    ]);
    expect(feed(new RpcGate(check), flow, size)).toEqual(flow);
  });

  it("closes on a call outside a migration, before a byte of it goes on", () => {
    const gate = new RpcGate(check);
    const open = message(REMOTE_PROGRAM, 1, 0);
    expect(gate.push(open)).toEqual([open]);
    expect(() => gate.push(message(REMOTE_PROGRAM, 234, 0))).toThrow(/procedure 234 is not part of a migration/);
    expect(() => gate.push(open)).toThrow(); // and stays closed
  });

  it("refuses another domain, another emulator, another program, and garbage", () => {
    expect(feed(new RpcGate(check), prepare(domain("db1")), 64)).toEqual(
      new Error("DOMAIN_MIGRATE_PREPARE_TUNNEL3_PARAMS: the domain XML is domain db1, armed for web1"),
    );
    expect(String(feed(new RpcGate(check), prepare(domain("web1", "/tmp/evil")), 64))).toMatch(
      /names host resources the definition here does not: emulator \/tmp\/evil/,
    );
    expect(String(feed(new RpcGate(check), message(0x1234, 1, 0), 64))).toMatch(/program 0x1234/);
    expect(String(feed(new RpcGate(check), Buffer.from("GET / HTTP/1.1\r\nHost: example\r\n\r\n"), 64))).toMatch(
      /not a libvirt RPC message/,
    );
  });
});

describe("virsh domjobinfo", () => {
  it("gives whole bytes and milliseconds", () => {
    const info = parseJobInfo(
      "Job type:         Completed\nTime elapsed:     2345 ms\nData processed:   98.523 MiB\n" +
        "Data total:       96.008 MiB\nTotal downtime:   31 ms\nMemory bandwidth: 12.5 MiB/s\n",
    );
    expect(info.get("Data processed")).toBe(Math.round(98.523 * 2 ** 20));
    expect(Number.isInteger(info.get("Data total"))).toBe(true);
    expect(info.get("Time elapsed")).toBe(2345);
    expect(info.get("Total downtime")).toBe(31);
    expect(info.get("Job type")).toBe("Completed");
  });
});
