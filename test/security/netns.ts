/**
 * A stranger's host for the security tests: a network namespace joined to the root namespace by a
 * veth pair on a random /30, so a test can send from a real non-loopback address. Names carry the
 * pid and a random suffix (helpers run in parallel); destroy() is safe to call twice. Needs root.
 */
import { randomInt } from "node:crypto";
import execa from "execa";

export class StrangerNet {
  private constructor(
    readonly ns: string,
    private readonly hostIf: string,
    /** Our end, in the root namespace (agents bind here). */
    readonly hostAddress: string,
    /** The stranger's end, inside `ns`. */
    readonly strangerAddress: string,
  ) {}

  static async create(): Promise<StrangerNet> {
    const tag = `${process.pid % 100000}${randomInt(36 ** 3).toString(36)}`;
    const subnet = `10.${randomInt(200, 250)}.${randomInt(256)}.${randomInt(64) * 4}`;
    const [a, b, c, d] = subnet.split(".").map(Number);
    const net = new StrangerNet(`stsec${tag}`, `sth${tag}`, `${a}.${b}.${c}.${d + 1}`, `${a}.${b}.${c}.${d + 2}`);
    try {
      await execa("ip", ["netns", "add", net.ns]);
      await execa("ip", ["link", "add", net.hostIf, "type", "veth", "peer", "name", "eth0", "netns", net.ns]);
      await execa("ip", ["addr", "add", `${net.hostAddress}/30`, "dev", net.hostIf]);
      await execa("ip", ["link", "set", net.hostIf, "up"]);
      await execa("ip", ["-n", net.ns, "addr", "add", `${net.strangerAddress}/30`, "dev", "eth0"]);
      await execa("ip", ["-n", net.ns, "link", "set", "eth0", "up"]);
      await execa("ip", ["-n", net.ns, "link", "set", "lo", "up"]);
      return net;
    } catch (err) {
      await net.destroy();
      throw err;
    }
  }

  /** Run a program inside the stranger's namespace; resolves with its exit code and output. */
  async run(cmd: string, args: string[]): Promise<{ code: number; output: string }> {
    const r = await execa("ip", ["netns", "exec", this.ns, cmd, ...args], { reject: false, all: true, timeout: 60000 });
    return { code: r.exitCode ?? -1, output: r.all ?? "" };
  }

  /** Take the stranger's end of the link down (a blackout both ways) or up again. */
  async setLink(up: boolean): Promise<void> {
    await execa("ip", ["-n", this.ns, "link", "set", "eth0", up ? "up" : "down"]);
  }

  async destroy(): Promise<void> {
    await execa("ip", ["link", "del", this.hostIf], { reject: false });
    await execa("ip", ["netns", "del", this.ns], { reject: false });
  }
}
