/**
 * The libvirt gate's reading of domain XML and migration cookies, without a daemon. The fixtures
 * are what libvirt 9.0 really sent in a tunnelled migration (paths shortened): the destination's
 * `dumpxml --migratable`, the source's destination_xml, and the Finish call's cookie.
 */
import fs from "node:fs";
import path from "node:path";
import { parseMigrationCookie } from "../../lib/hypervisor/libvirt-cookie";
import { domainMismatch, domainShape, hostResources, parseDomain } from "../../lib/hypervisor/libvirt-domain-xml";
import { incomingDomainCheck } from "../../lib/hypervisor/libvirt-incoming";
import { MAX_MIGRATION_CALL, RpcGate, parseMigrationCall } from "../../lib/hypervisor/libvirt-rpc-gate";
import { canonical, parseLibvirtXml } from "../../lib/hypervisor/libvirt-xml";
import { parseDomainXml } from "../../lib/hypervisor/virsh";

const fixture = (f: string) => fs.readFileSync(path.join(__dirname, "..", "fixtures", "libvirt", f), "utf8");
const localXml = fixture("local-migratable.xml");
const incomingXml = fixture("incoming-destination.xml");
const local = parseDomainXml(localXml);
const UUID = "8870db9c-7f82-4a89-8b4b-d36f96cbb267";

/** The real incoming definition with `device` added after the emulator. */
const withDevice = (device: string, xml = incomingXml) => xml.replace("</emulator>", `</emulator>\n    ${device}`);
const mismatch = (xml: string) => {
  const parsed = parseDomain(xml);
  if (!parsed.ok) return `unparsed: ${parsed.why}`;
  return domainMismatch(parsed.domain, local);
};

describe("libvirt domain XML, parsed", () => {
  it("takes what libvirt really sends for the armed domain", () => {
    expect(mismatch(incomingXml)).toBeUndefined();
    expect(domainShape(local)).toEqual({
      name: "cap1",
      memoryKib: 98304,
      vcpus: 1,
      uuid: UUID,
      emulator: "/usr/bin/qemu-system-x86_64",
      disks: [],
    });
  });

  it("reads elements, not text: a <name> in a comment is no name, either quote style is the same", () => {
    const hidden = incomingXml.replace("<name>cap1</name>", "<!-- <name>cap1</name> --><name>evil</name>");
    const parsed = parseDomain(hidden);
    expect(parsed.ok && domainShape(parsed.domain).name).toBe("evil");
    const single = parseLibvirtXml(`<disk type='file'><source file='/a&amp;b'/></disk>`);
    const double = parseLibvirtXml(`<disk type="file"><source file="/a&#38;b"/></disk>`);
    expect(single.ok && double.ok && canonical(single.root) === canonical(double.root)).toBe(true);
    expect(parseDomain(incomingXml.replace("</uuid>", "</uuid><name>two</name>"))).toEqual({
      ok: false,
      why: "it has 2 <name> elements",
    });
  });

  it.each([
    ["a file disk", `<disk type="file" device="disk"><source file="/etc/shadow"/><target dev="vda"/></disk>`, /disk/],
    ["a filesystem of /", "<filesystem type='mount'><source dir='/'/><target dir='r'/></filesystem>", /filesystem/],
    ["a hostdev", "<hostdev mode='subsystem' type='pci'><source><address bus='0x00'/></source></hostdev>", /hostdev/],
    ["a direct NIC", "<interface type='direct'><source dev='eth0' mode='bridge'/></interface>", /interface/],
    ["a tap NIC", "<interface type='ethernet'><target dev='tap0'/></interface>", /interface type="ethernet"/],
    ["a serial to a file", "<serial type='file'><source path='/root/.ssh/authorized_keys'/></serial>", /serial/],
    ["a unix channel", "<channel type='unix'><source mode='bind' path='/run/x.sock'/></channel>", /channel/],
  ])("refuses %s the definition here does not name", (_what, device, kind) => {
    const why = mismatch(withDevice(device));
    expect(why).toMatch(/^it names host resources the definition here does not: /);
    expect(why).toMatch(kind);
  });

  it("refuses another emulator or kernel, and any other difference, with the path", () => {
    expect(mismatch(incomingXml.replace("/usr/bin/qemu-system-x86_64", "/tmp/qemu"))).toMatch(/emulator \/tmp\/qemu/);
    expect(mismatch(incomingXml.replace("/srv/guest/vmlinuz", "/tmp/k"))).toMatch(/os kernel \/tmp\/k/);
    expect(mismatch(incomingXml.replace("98304</memory>", "9830400</memory>"))).toBe(
      '/domain/memory says "9830400", here "98304"',
    );
    expect(mismatch(withDevice("<watchdog model='i6300esb' action='poweroff'/>"))).toBe(
      "/domain/devices/watchdog is not in the definition here (it has <serial> there)",
    );
    expect(mismatch(withDevice("<controller type='scsi' index='0' model='virtio-scsi'/>"))).toMatch(
      /^\/domain\/devices\/controller is not in the definition here/,
    );
  });

  it("lets through only what libvirt itself changes (partition, implicit controllers, PS/2, audio none)", () => {
    const added = withDevice(
      "<controller type='usb' index='0' model='piix3-uhci'/><controller type='pci' index='0' model='pci-root'/>" +
        "<input type='keyboard' bus='ps2'/><audio id='1' type='none'/>",
    );
    expect(mismatch(added)).toBeUndefined();
    expect(mismatch(added.replace("<audio id='1' type='none'/>", "<audio id='1' type='oss'/>"))).toMatch(/audio/);
  });

  it("refuses other vocabularies outside <metadata>, also by default namespace", () => {
    const qemu = incomingXml
      .replace("<domain type='qemu'>", "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>")
      .replace("</domain>", "<qemu:commandline><qemu:arg value='-S'/></qemu:commandline></domain>");
    expect(mismatch(qemu)).toMatch(/another XML vocabulary \(the attribute xmlns:qemu at \/domain\)/);
    const unprefixed = incomingXml.replace(
      "</domain>",
      "<commandline xmlns='http://libvirt.org/schemas/domain/qemu/1.0'><arg value='-S'/></commandline></domain>",
    );
    expect(mismatch(unprefixed)).toMatch(/another XML vocabulary \(the attribute xmlns at \/domain\/commandline\)/);
    // an application's own metadata is where libvirt keeps other vocabularies: compared, not refused
    const meta = "<metadata><app:info xmlns:app='urn:x'>1</app:info></metadata>";
    const withMeta = (xml: string) => xml.replace("</uuid>", `</uuid>${meta}`);
    expect(domainMismatch(parseDomainXml(withMeta(incomingXml)), parseDomainXml(withMeta(localXml)))).toBeUndefined();
  });

  it("refuses DOCTYPE, entities, CDATA, oversized documents and references outside the predefined five", () => {
    const doctype = `<!DOCTYPE domain [<!ENTITY x "${"a".repeat(10)}">]>${incomingXml.replace("cap1", "&x;")}`;
    expect(mismatch(doctype)).toMatch(/<!DOCTYPE> is not allowed \(libvirt XML has no DTD and no entities\)/);
    expect(mismatch(incomingXml.replace("cap1", "<![CDATA[cap1]]>"))).toMatch(/CDATA sections are not allowed/);
    expect(mismatch(incomingXml.replace("cap1", "&valueOf;"))).toMatch(/an undefined entity &valueOf;/);
    const huge = incomingXml.replace("</domain>", `<description>${"x".repeat(1 << 20)}</description></domain>`);
    expect(mismatch(huge)).toMatch(/^unparsed: \/?.*libvirt XML documents here are at most 1048576 bytes/);
    expect(mismatch(incomingXml.replace("</os>", ""))).toMatch(/^unparsed: malformed XML/);
  });

  it("lists every host resource a definition names", () => {
    const xml = withDevice(
      "<disk type='file'><source file='/v/a.img'/></disk><disk type='file' device='cdrom'><target dev='hdc'/></disk>",
    );
    const parsed = parseDomain(xml);
    expect(parsed.ok && hostResources(parsed.domain)).toEqual([
      "emulator /usr/bin/qemu-system-x86_64",
      "os kernel /srv/guest/vmlinuz",
      "os initrd /srv/guest/initramfs.gz",
      'disk type="file" <source file="/v/a.img"></source>',
    ]);
  });
});

describe("libvirt's migration cookie, parsed", () => {
  const cookie = fixture("finish-cookie.xml");

  it("reads the real one: the domain it is for and the persistent definition, which is the local one", () => {
    const parsed = parseMigrationCookie(`${cookie}\0`);
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect([parsed.cookie.name, parsed.cookie.uuid, parsed.cookie.domains.length]).toEqual(["cap1", UUID, 1]);
    expect(domainMismatch(parsed.cookie.domains[0], local)).toBeUndefined();
  });

  it("reads a disk copy's targets; refuses unknown parts and a second name", () => {
    const nbd = parseMigrationCookie(
      cookie.replace("</qemu-migration>", "<nbd><disk target='vda' capacity='25165824'/></nbd></qemu-migration>"),
    );
    expect(nbd.ok && nbd.cookie.nbd).toEqual(["vda"]);
    expect(parseMigrationCookie(cookie.replace("</qemu-migration>", "<nbd size='1'/></qemu-migration>"))).toEqual({
      ok: false,
      why: "its <nbd> has an attribute size",
    });
    expect(parseMigrationCookie(cookie.replace("</qemu-migration>", "<x/></qemu-migration>"))).toEqual({
      ok: false,
      why: "it has a <x> part",
    });
    expect(parseMigrationCookie(cookie.replace("<hostname>", "<name>x</name><hostname>"))).toEqual({
      ok: false,
      why: "it has 2 <name> and 1 <uuid> elements",
    });
  });
});

describe("the migration call, judged whole", () => {
  const check = incomingDomainCheck("cap1", local);
  const call = (params: Array<[string, string]>, c = fixture("finish-cookie.xml")) => ({
    procedure: 304,
    params: new Map(params),
    cookie: c,
  });

  it("admits the real call and refuses what it does not send", () => {
    expect(check(call([["destination_xml", incomingXml]]))).toBeUndefined();
    expect(check(call([["destination_xml", incomingXml]], ""))).toBe("carries no migration cookie");
    expect(
      check(
        call([
          ["destination_xml", incomingXml],
          ["migrate_disks", "vda"],
        ]),
      ),
    ).toMatch(/parameter migrate_disks/);
    const other = fixture("finish-cookie.xml").replace(/<name>cap1<\/name>/, "<name>x</name>");
    expect(check(call([["destination_xml", incomingXml]], other))).toMatch(/cookie is for domain x, armed for cap1/);
    const hostile = fixture("finish-cookie.xml").replace("</devices>", "<hostdev type='usb'/></devices>");
    expect(check(call([["destination_xml", incomingXml]], hostile))).toMatch(/^the cookie's domain is not cap1/);
  });

  it("refuses a repeated string parameter: libvirt would use the first, the check saw the last", () => {
    const xdr = (s: string) => {
      const b = Buffer.from(s);
      const pad = Buffer.alloc((4 - (b.length % 4)) % 4);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      return Buffer.concat([len, b, pad]);
    };
    const u32 = (n: number) => Buffer.from([0, 0, 0, n]);
    const param = (k: string, v: string) => Buffer.concat([xdr(k), u32(7), xdr(v)]);
    const payload = Buffer.concat([u32(2), param("destination_xml", "a"), param("destination_xml", "b"), xdr("")]);
    expect(() => parseMigrationCall(304, payload)).toThrow("parameter destination_xml is repeated");
  });

  it("judges a call's declared length before holding its bytes", () => {
    const head = Buffer.alloc(28);
    head.writeUInt32BE(MAX_MIGRATION_CALL + 1, 0);
    head.writeUInt32BE(0x20008086, 4);
    head.writeInt32BE(304, 12);
    expect(() => new RpcGate(check).push(head)).toThrow(/a migration call of \d+ bytes \(at most \d+ can pass\)/);
    // four bytes are enough to refuse a length beyond libvirt's own limit
    expect(() => new RpcGate(check).push(Buffer.from([0xff, 0xff, 0xff, 0xf0]))).toThrow(
      "not a libvirt RPC message (length 4294967280)",
    );
  });
});
