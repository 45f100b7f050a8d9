/**
 * libvirt through `virsh` (libvirt-clients): each call is one process with `-c URI`, arguments
 * as an array (never a shell). virsh over a Node binding: the npm bindings (node-libvirt,
 * libvirt) are unmaintained and need a native build against libvirt-dev, while virsh is
 * libvirt's own maintained client, ships with every libvirt host and speaks every transport.
 */
import execa from "execa";
import { TeleportError } from "../errors";
import { domainShape, parseDomain, type DomainShape } from "./libvirt-domain-xml";
import type { XmlElement } from "./libvirt-xml";

export type { DomainShape };

/** `virsh domstate --reason`: "running (booted)", "shut off (migrated)", "paused (migration)". */
export interface DomainState {
  state: string;
  reason: string;
}

/** `virsh domjobinfo`'s "Key: value unit" lines, values converted to whole numbers (bytes, ms). */
export type JobInfo = Map<string, number | string>;

const UNITS: ReadonlyMap<string, number> = new Map([
  ["B", 1],
  ["KiB", 1024],
  ["MiB", 1024 ** 2],
  ["GiB", 1024 ** 3],
  ["TiB", 1024 ** 4],
]);

export function parseJobInfo(text: string): JobInfo {
  const info: JobInfo = new Map();
  for (const line of text.split("\n")) {
    const m = /^([^:]+):\s+(.*?)\s*$/.exec(line);
    if (!m) continue;
    const [, key, raw] = m;
    const num = /^(-?[\d.]+)\s*(B|KiB|MiB|GiB|TiB|ms|bytes|pages\/s)?$/.exec(raw);
    // "98.523 MiB" is not a whole number of bytes: NRDL carries integers, so round here
    info.set(key.trim(), num ? Math.round(Number(num[1]) * (UNITS.get(num[2] ?? "") ?? 1)) : raw);
  }
  return info;
}

/** A definition virsh printed; parsed like any other (virsh's output is no reason to grep). */
export function parseDomainXml(xml: string, uri = "libvirt"): XmlElement {
  const parsed = parseDomain(xml);
  if (!parsed.ok)
    throw new TeleportError(500, `${uri} printed a domain definition this agent cannot read`, [parsed.why]);
  return parsed.domain;
}

export class Virsh {
  constructor(
    readonly uri: string,
    private readonly binary = "virsh",
  ) {}

  /** Run one virsh command; a failure becomes a TeleportError with virsh's own message. */
  async run(args: string[], status = 500): Promise<string> {
    const r = await execa(this.binary, ["-q", "-c", this.uri, ...args], { reject: false, stdin: "ignore" });
    if (r.exitCode !== 0) {
      const why = (r.stderr || r.stdout || `exit code ${r.exitCode}`).replace(/^error: /gm, "").trim();
      throw new TeleportError(status, `virsh ${args[0]} failed on ${this.uri}`, why.split("\n").filter(Boolean));
    }
    return r.stdout;
  }

  /** The domain's state, or undefined when this libvirt does not define it. */
  async domState(domain: string): Promise<DomainState | undefined> {
    const r = await execa(this.binary, ["-q", "-c", this.uri, "domstate", "--reason", domain], {
      reject: false,
      stdin: "ignore",
    });
    if (r.exitCode !== 0) {
      if (/failed to get domain|Domain not found/i.test(r.stderr)) return undefined;
      throw new TeleportError(503, `libvirt at ${this.uri} does not answer`, [r.stderr.replace(/^error: /gm, "")]);
    }
    const m = /^(.*?)\s*(?:\((.*)\))?\s*$/.exec(r.stdout.trim());
    return { state: m?.[1] ?? r.stdout.trim(), reason: m?.[2] ?? "" };
  }

  async shape(domain: string): Promise<DomainShape> {
    return domainShape(parseDomainXml(await this.run(["dumpxml", "--inactive", domain]), this.uri));
  }

  /** The definition libvirt would send for it when migrating: what an incoming one is compared with. */
  async migratable(domain: string): Promise<XmlElement> {
    return parseDomainXml(await this.run(["dumpxml", "--inactive", "--migratable", domain]), this.uri);
  }

  async jobInfo(domain: string, completed = false): Promise<JobInfo> {
    return parseJobInfo(await this.run(["domjobinfo", ...(completed ? ["--completed"] : []), domain]));
  }
}
