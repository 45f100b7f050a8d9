/**
 * The testbed's network: namespaces `sw` (the WAN switch), `dc1`, `dc2` (two data centers) and
 * `user` (the outside observer), on one L2 segment. Each data center has its own bridge with a
 * fixed MAC, an uplink to `sw` and pre-created taps for the VMs (QEMU's `script=no` cannot create
 * them inside a namespace). Namespace names carry a per-run prefix so concurrent runs never clash;
 * destroy() removes everything and is safe to call twice or after a half-built setup.
 * Needs root and iproute2.
 */
import { spawn } from "node:child_process";
import execa from "execa";

export type HostName = "dc1" | "dc2";
export const HOSTS: readonly HostName[] = ["dc1", "dc2"];

/** Addresses on the shared segment (10.10.0.0/24). Guests get theirs from the experiment. */
export const SEGMENT = { prefixLen: 24, dc1: "10.10.0.1", dc2: "10.10.0.2", user: "10.10.0.100" } as const;

export interface NetworkOptions {
  /** Names of the VMs that need a tap on each host. */
  vms: readonly string[];
  /** Routes the user needs to reach subnets behind router guests: destination CIDR -> gateway. */
  userRoutes?: Readonly<Record<string, string>>;
}

export interface Namespaces {
  sw: string;
  dc1: string;
  dc2: string;
  user: string;
}

/** `ip` in a namespace; throws with ip's own message on failure. */
async function ip(ns: string, args: string[]): Promise<void> {
  await execa("ip", ["-n", ns, ...args]);
}

/** Tap device name of a VM on a host (Linux limits interface names to 15 bytes). */
export function tapName(vm: string, host: HostName): string {
  return `t${host.slice(2)}-${vm}`.slice(0, 15);
}

export class TestbedNetwork {
  readonly ns: Namespaces;
  private created: string[] = [];

  private constructor(readonly prefix: string) {
    this.ns = { sw: `${prefix}-sw`, dc1: `${prefix}-dc1`, dc2: `${prefix}-dc2`, user: `${prefix}-user` };
  }

  /** Build the whole network; on any failure removes what was built and rethrows. */
  static async create(opts: NetworkOptions): Promise<TestbedNetwork> {
    // pid + a random suffix: unique per run even when one process builds several testbeds.
    const net = new TestbedNetwork(`tb${process.pid}${Math.random().toString(36).slice(2, 5)}`);
    try {
      await net.build(opts);
      return net;
    } catch (err) {
      await net.destroy();
      throw err;
    }
  }

  private async build(opts: NetworkOptions): Promise<void> {
    for (const ns of Object.values(this.ns)) {
      await execa("ip", ["netns", "add", ns]);
      this.created.push(ns);
      await ip(ns, ["link", "set", "lo", "up"]);
    }
    await ip(this.ns.sw, ["link", "add", "br0", "type", "bridge"]);
    await ip(this.ns.sw, ["link", "set", "br0", "up"]);
    for (const side of ["dc1", "dc2", "user"] as const) {
      // Created inside sw with its peer moved straight into the host: no name ever appears in the root namespace.
      await ip(this.ns.sw, [
        "link",
        "add",
        `p-${side}`,
        "type",
        "veth",
        "peer",
        "name",
        "uplink",
        "netns",
        this.ns[side],
      ]);
      await ip(this.ns.sw, ["link", "set", `p-${side}`, "master", "br0", "up"]);
    }
    for (const [i, host] of HOSTS.entries()) {
      const ns = this.ns[host];
      // A fixed bridge MAC: otherwise the bridge takes the lowest port MAC and changes it as taps come and go.
      await ip(ns, ["link", "add", "br0", "address", `02:00:00:00:0d:0${i + 1}`, "type", "bridge"]);
      await ip(ns, ["link", "set", "uplink", "master", "br0", "up"]);
      await ip(ns, ["addr", "add", `${SEGMENT[host]}/${SEGMENT.prefixLen}`, "dev", "br0"]);
      await ip(ns, ["link", "set", "br0", "up"]);
      for (const vm of opts.vms) {
        await ip(ns, ["tuntap", "add", "dev", tapName(vm, host), "mode", "tap"]);
        await ip(ns, ["link", "set", tapName(vm, host), "master", "br0", "up"]);
      }
    }
    await ip(this.ns.user, ["addr", "add", `${SEGMENT.user}/${SEGMENT.prefixLen}`, "dev", "uplink"]);
    await ip(this.ns.user, ["link", "set", "uplink", "up"]);
    for (const [cidr, via] of Object.entries(opts.userRoutes ?? {}))
      await ip(this.ns.user, ["route", "add", cidr, "via", via]);
  }

  /** Argument prefix that runs a command inside a namespace of this testbed. */
  exec(where: keyof Namespaces): string[] {
    return ["ip", "netns", "exec", this.ns[where]];
  }

  /**
   * Shape each data center's uplink (egress, so both directions of the inter-DC link) with a
   * token bucket: what the thesis called a shared link between data centers. `mbit` 0 removes it.
   */
  async shapeInterDc(mbit: number): Promise<void> {
    for (const host of HOSTS) {
      await execa("tc", ["-n", this.ns[host], "qdisc", "del", "dev", "uplink", "root"], { reject: false });
      if (mbit <= 0) continue;
      // Burst of 10 ms at line rate (at least 64 KiB): smaller buckets throttle below the rate at HZ=250.
      const burst = Math.max(65536, Math.round((mbit * 1e6) / 8 / 100));
      await execa("tc", [
        "-n",
        this.ns[host],
        "qdisc",
        "add",
        "dev",
        "uplink",
        "root",
        "tbf",
        "rate",
        `${mbit}mbit`,
        "burst",
        String(burst),
        "latency",
        "50ms",
      ]);
    }
  }

  /**
   * Everything the data centers send into the switch (migration streams, SIP, probe answers):
   * one reader inside `sw` prints the two ports' rx byte counters every `everyMs`, so sampling
   * costs one process instead of one per sample. `onSample` gets the summed counter.
   */
  watchInterDcBytes(everyMs: number, onSample: (t: number, bytes: number) => void): { stop(): void } {
    const files = HOSTS.map((h) => `/sys/class/net/p-${h}/statistics/rx_bytes`).join(" ");
    const script = `while :; do echo $(cat ${files}); sleep ${everyMs / 1000}; done`;
    const child = spawn(this.exec("sw")[0], [...this.exec("sw").slice(1), "sh", "-c", script], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    let partial = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        const values = line.trim().split(/\s+/).map(Number);
        if (values.length === HOSTS.length && values.every(Number.isFinite))
          onSample(
            Date.now(),
            values.reduce((a, b) => a + b, 0),
          );
      }
    });
    return { stop: () => void child.kill("SIGKILL") };
  }

  /** Delete every namespace (which removes their links); never throws. */
  async destroy(): Promise<void> {
    for (const ns of this.created.reverse()) await execa("ip", ["netns", "del", ns], { reject: false });
    this.created = [];
  }
}
