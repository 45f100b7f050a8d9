/**
 * virsh.ts's long-lived session (one interactive virsh per URI) against a real libvirtd: answers
 * framed right one after the other and when asked all at once, errors told apart from output,
 * arguments that need quoting, one process for every query, and a new one after virsh or
 * libvirtd went away; the lifecycle event stream, also across a libvirtd restart.
 */
import crypto from "node:crypto";
import { Virsh, VirshSession, virshQuote } from "../../lib/hypervisor/virsh";
import { defineDomain, domainXml, startLibvirtLab, type LibvirtLab } from "./hosts";

jest.setTimeout(120_000);

let lab: LibvirtLab;
beforeAll(async () => {
  lab = await startLibvirtLab();
  await defineDomain(lab.dc1, domainXml(lab.guest, "vs-one", crypto.randomUUID()));
});
afterAll(async () => lab?.close());

describe("virsh session", () => {
  it("quotes what virsh's parser would split or unescape, and refuses line breaks", () => {
    expect(virshQuote("qemu+unix:///system?socket=/tmp/a-b/run/libvirt-sock")).toBe(
      "qemu+unix:///system?socket=/tmp/a-b/run/libvirt-sock",
    );
    expect(virshQuote(`a b;c"d\\e`)).toBe(`"a b;c\\"d\\\\e"`);
    expect(() => virshQuote("a\nb")).toThrow(/line break/);
  });

  it("answers each command with its own output and errors, in order, also when asked all at once", async () => {
    const s = new VirshSession(lab.dc1.uri);
    try {
      expect(await s.ask(["domstate", "--reason", "vs-one"])).toEqual({
        ok: true,
        stdout: "shut off (unknown)",
        stderr: "",
      });
      const pid = s.pid;
      const missing = await s.ask(["domstate", "vs-none"]);
      expect(missing.ok).toBe(false);
      expect(missing.stderr).toMatch(/failed to get domain 'vs-none'/);
      expect((await s.ask(["echo", "a b;c", `d"e\\f`, "#x"])).stdout).toBe(`a b;c d"e\\f #x`);
      // a line longer than readline's idea of the terminal (it echoes every line it reads)
      const long = `${"y".repeat(300)} ${"z".repeat(300)}`;
      expect((await s.ask(["echo", long, "tail"])).stdout).toBe(`${long} tail`);
      const all = await Promise.all(
        Array.from({ length: 20 }, (_, i) => s.ask(i % 2 ? ["domstate", "vs-one"] : ["echo", `n${i}`])),
      );
      expect(all.map((a) => a.stdout)).toEqual(Array.from({ length: 20 }, (_, i) => (i % 2 ? "shut off" : `n${i}`)));
      const xml = await s.ask(["dumpxml", "--inactive", "vs-one"]);
      expect(xml.stdout).toMatch(/^<domain type='qemu'>[\s\S]*<name>vs-one<\/name>[\s\S]*<\/domain>$/);
      expect(s.pid).toBe(pid); // no process per command
    } finally {
      s.close();
    }
  });

  it("starts a new virsh when its own died, and reconnects after libvirtd restarted", async () => {
    const s = new VirshSession(lab.dc1.uri);
    try {
      expect((await s.ask(["domstate", "vs-one"])).stdout).toBe("shut off");
      const pid = s.pid;
      if (pid) process.kill(pid, "SIGKILL");
      expect((await s.ask(["domstate", "vs-one"])).stdout).toBe("shut off");
      expect(s.pid).not.toBe(pid);
      await lab.dc1.restart();
      expect(await s.ask(["domstate", "vs-one"])).toEqual({ ok: true, stdout: "shut off", stderr: "" });
    } finally {
      s.close();
    }
  });

  it("hears a domain's lifecycle events, also after libvirtd restarted", async () => {
    const v = new Virsh(lab.dc1.uri);
    const heard: string[] = [];
    const off = v.onLifecycle("vs-one", (event, detail) => heard.push(`${event} ${detail}`));
    const until = async (what: string) => {
      for (const end = Date.now() + 10_000; !heard.includes(what); await new Promise((r) => setTimeout(r, 50)))
        if (Date.now() > end) throw new Error(`no "${what}" event; heard ${heard.join(", ")}`);
    };
    try {
      await new Promise((r) => setTimeout(r, 300)); // the stream connects
      await v.run(["start", "--paused", "vs-one"]);
      await until("Started Booted");
      await v.ask(["resume", "vs-one"]);
      await until("Resumed Unpaused");
      await lab.dc1.restart();
      await new Promise((r) => setTimeout(r, 1000)); // the stream ended with libvirtd and started again
      await v.ask(["suspend", "vs-one"]);
      await until("Suspended Paused");
    } finally {
      off();
      await v.run(["destroy", "vs-one"]).catch(() => undefined);
    }
  });

  it("Virsh's queries go through one session per URI: domState, jobInfo, a failure as a TeleportError", async () => {
    const v = new Virsh(lab.dc1.uri);
    expect(await v.domState("vs-one")).toMatchObject({ state: "shut off" });
    expect(await v.domState("vs-none")).toBeUndefined();
    expect((await v.jobInfo("vs-one", true)).get("Job type")).toBe("None");
    await expect(v.ask(["suspend", "vs-one"])).rejects.toMatchObject({
      status: 500,
      message: expect.stringMatching(/virsh suspend failed on/),
    });
    expect((await v.shape("vs-one")).memoryKib).toBe(96 * 1024);
  });
});
