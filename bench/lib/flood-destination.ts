/**
 * The flooded destination as its own process, so its RSS is its own: the configured QEMU
 * inventory (the real move) plus a LoadDriver of `probe<n>` VMs that arms nothing (the second,
 * legitimate dialogs sipp opens during the flood). Prints `ready` once listening; on a line
 * `status` on stdin prints `status <armed probes> <journal entries> <inbound connections>`;
 * SIGTERM stops it.
 * Usage: node dist/bench/lib/flood-destination.js <config.json> <probe VMs>
 */
import fs from "node:fs";
import readline from "node:readline";
import { DestinationAgent } from "../../agents/destination/agent";
import { readJournal } from "../../agents/destination/journal";
import { inventoryOf, sipConfigOf } from "../../agents/wiring";
import { parseConfig } from "../../lib/config/load";
import { createDriver } from "../../lib/hypervisor/drivers";
import { Host } from "../../lib/hypervisor/host";
import { LoadDriver } from "../../lib/hypervisor/load";
import { createLogger } from "../../lib/log/logger";
import { createSipBackend } from "../../lib/sip";

async function main(): Promise<void> {
  const [file, probes] = process.argv.slice(2);
  const config = parseConfig(JSON.parse(fs.readFileSync(file, "utf8")));
  // warnings only: a flood must show what the agent logs under it, not every dialog
  const logger = createLogger({ level: process.env.FLOOD_LOG ?? "error" });
  // a Host holds one driver per hypervisor kind: the probes' stand-in answers for libvirt
  const load = new LoadDriver({ kind: "libvirt", count: Number(probes), prefix: "probe" });
  const qemu = createDriver("qemu", { runDir: config.runDir, inventory: inventoryOf(config), logger });
  const sip = createSipBackend(sipConfigOf(config, logger)); // sip.js: its transport holds the TCP limits
  const agent = new DestinationAgent({ config, sip, host: new Host([qemu, load]), logger });
  await agent.start();
  process.stdout.write(`ready ${sip.listeners.map((l) => `${l.transport}:${l.port}`).join(" ")}\n`);
  readline.createInterface({ input: process.stdin }).on("line", (line) => {
    if (line.trim() !== "status") return;
    const journal = readJournal(config.stateDir).length;
    process.stdout.write(`status ${load.armedCount} ${journal} ${sip.inboundConnections}\n`);
  });
  process.once("SIGTERM", () => {
    void agent.stop().finally(() => process.exit(0));
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`flood destination failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
