/**
 * The systemd units as systemd 252 reads them (`systemd-analyze verify` in a scratch root that
 * holds the units, Debian's own units and a stand-in sip-teleport binary), and the hardening
 * each one must keep.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import execa from "execa";

const UNITS = path.join(__dirname, "..", "..", "deploy", "systemd");
const NAMES = ["sip-teleport-listen.service", "sip-teleport-console.service"];

/** Every `Key=value` of a unit's [Service] section; repeated keys keep every value. */
function serviceKeys(file: string): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  let section = "";
  for (const raw of fs.readFileSync(file, "utf8").split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) section = header[1];
    else if (section === "Service") {
      const [k, ...v] = line.split("=");
      keys.set(k, [...(keys.get(k) ?? []), v.join("=")]);
    }
  }
  return keys;
}

function scratchRoot(): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "st-systemd-"));
  fs.mkdirSync(path.join(root, "usr/local/bin"), { recursive: true });
  fs.mkdirSync(path.join(root, "usr/lib/systemd"), { recursive: true });
  fs.mkdirSync(path.join(root, "etc/systemd/system"), { recursive: true });
  fs.writeFileSync(path.join(root, "usr/local/bin/sip-teleport"), "#!/bin/sh\n", { mode: 0o755 });
  fs.cpSync("/lib/systemd/system", path.join(root, "usr/lib/systemd/system"), { recursive: true });
  for (const n of NAMES) fs.copyFileSync(path.join(UNITS, n), path.join(root, "etc/systemd/system", n));
  return root;
}

describe("systemd units", () => {
  it("verify cleanly: no unknown key, no bad value, the binary they start exists", async () => {
    const root = scratchRoot();
    try {
      const units = NAMES.map((n) => path.join(root, "etc/systemd/system", n));
      const r = await execa("systemd-analyze", ["verify", `--root=${root}`, ...units], { reject: false });
      expect({ exitCode: r.exitCode, warnings: r.stderr }).toEqual({ exitCode: 0, warnings: "" });
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it.each(NAMES)("%s keeps a network daemon's hardening", (name) => {
    const k = serviceKeys(path.join(UNITS, name));
    const one = (key: string) => k.get(key)?.join(" ");
    expect(one("NoNewPrivileges")).toBe("yes");
    expect(one("ProtectSystem")).toBe("strict");
    expect(one("ReadWritePaths")).toBe("/var/lib/sip-teleport /run/sip-teleport");
    expect(one("PrivateTmp")).toBe("yes");
    expect(one("ProtectHome")).toBe("yes");
    expect(one("RestrictAddressFamilies")).toBe("AF_UNIX AF_INET AF_INET6 AF_NETLINK");
    expect(one("StateDirectory")).toBe("sip-teleport");
    expect(one("Restart")).toBe("on-failure");
    expect(one("User")).toBe("sip-teleport");
    expect(one("ExecStart")).toMatch(
      /^\/usr\/local\/bin\/sip-teleport (listen|console) --config \/etc\/sip-teleport\/\S+\.json/,
    );
  });

  it("lets the listener reach KVM and taps, and keeps its VMs alive across restarts", () => {
    const k = serviceKeys(path.join(UNITS, "sip-teleport-listen.service"));
    expect(k.get("DevicePolicy")).toEqual(["closed"]);
    expect(k.get("DeviceAllow")).toEqual(["/dev/kvm rw", "/dev/net/tun rw"]);
    expect(k.get("CapabilityBoundingSet")).toEqual(["CAP_NET_ADMIN"]);
    expect(k.get("RuntimeDirectory")).toEqual(["sip-teleport"]);
    expect(k.get("RuntimeDirectoryPreserve")).toEqual(["yes"]);
    expect(k.get("KillMode")).toEqual(["process"]);
  });

  it("gives the console no capability and no device", () => {
    const k = serviceKeys(path.join(UNITS, "sip-teleport-console.service"));
    expect(k.get("CapabilityBoundingSet")).toEqual([""]);
    expect(k.get("PrivateDevices")).toEqual(["yes"]);
    expect(k.get("ExecStart")?.[0]).toContain("--http 127.0.0.1:");
  });
});
