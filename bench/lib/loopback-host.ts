/**
 * One bench host on this machine's loopback: its config (UDP SIP on a free port, migration ports
 * in `ports`, loopback callers admitted by address as a lab's are: no default does), its host, its
 * SIP endpoint shared by its destination agent (started) and its source agent.
 */
import path from "node:path";
import { DestinationAgent } from "../../agents/destination/agent";
import { SourceAgent } from "../../agents/source/agent";
import { hostOf, sipOf, type AgentSip } from "../../agents/wiring";
import { parseConfig } from "../../lib/config/load";
import type { VmDefinition } from "../../lib/hypervisor/driver";
import type { Host } from "../../lib/hypervisor/host";
import { silentLogger } from "../../lib/log/logger";

export interface LoopbackHost {
  name: "dc1" | "dc2";
  host: Host;
  sip: AgentSip;
  dest: DestinationAgent;
  agent: SourceAgent;
  /** Its SIP URI, e.g. sip:dc2@127.0.0.1:PORT. */
  uri: string;
  runDir: string;
}

export async function loopbackHost(
  base: string,
  name: "dc1" | "dc2",
  inventory: VmDefinition[],
  ports: string,
): Promise<LoopbackHost> {
  const cfg = parseConfig({
    host: name,
    sip: { aor: `sip:${name}@127.0.0.1`, listen: [{ transport: "udp", address: "127.0.0.1", port: 0 }] },
    inventory,
    runDir: path.join(base, name),
    stateDir: path.join(base, `${name}-state`),
    migration: { address: "127.0.0.1", ports },
    security: { allow: ["127.0.0.0/8"] },
  });
  const host = hostOf(cfg, silentLogger);
  const sip = sipOf(cfg, silentLogger);
  const dest = new DestinationAgent({ config: cfg, sip, host, logger: silentLogger });
  await dest.start();
  const agent = new SourceAgent({ sip, host, hostName: name, logger: silentLogger });
  return { name, host, sip, dest, agent, uri: `sip:${name}@127.0.0.1:${sip.listeners[0].port}`, runDir: cfg.runDir };
}
