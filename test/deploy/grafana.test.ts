/** The Grafana dashboard in deploy/ only charts metrics the agents export (names from lib/metrics). */
import fs from "node:fs";
import path from "node:path";
import { AgentMetrics } from "../../lib/metrics/metrics";

test("every metric a panel queries exists, and every exported metric has a panel", async () => {
  const file = path.join(__dirname, "..", "..", "deploy", "grafana", "sip-teleport.json");
  const dash = JSON.parse(fs.readFileSync(file, "utf8")) as { panels: Array<{ targets: Array<{ expr: string }> }> };
  const queried = new Set(
    dash.panels.flatMap((p) => p.targets.flatMap((t) => t.expr.match(/sip_teleport_[a-z_]+/g) ?? [])),
  );
  const exported = (await new AgentMetrics("destination").registry.getMetricsAsJSON())
    .map((m) => m.name)
    .filter((n) => !n.startsWith("sip_teleport_process_"));
  const base = (n: string) => n.replace(/_(bucket|count|sum)$/, "");
  expect([...queried].map(base).filter((n) => !exported.includes(n))).toEqual([]);
  expect(exported.filter((n) => ![...queried].map(base).includes(n))).toEqual([]);
});
