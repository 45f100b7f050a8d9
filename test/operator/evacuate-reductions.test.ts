/**
 * `evacuate --compress` and `--dedup`, as `migrate` takes them: the reductions go into every dialog's
 * offer, the report names what each moved VM's stream had, and a `--dedup on` that cannot be (no
 * group commit) is a usage error before anything is sent. `sip-teleport evacuate` runs as its own process.
 */
import type { EvacuationReport } from "../../agents/source/evacuate";
import { ensureBuilt, runCli } from "../e2e/cli-process";
import { bootOnSource, configFile, guestDefs, placement, startPair, type Pair } from "../harness";

jest.setTimeout(90_000);

let pair: Pair;

beforeAll(async () => {
  ensureBuilt();
  pair = await startPair(await guestDefs([["router1", "router"]]));
  await bootOnSource(pair);
});

afterAll(async () => pair?.close());

/** dc1's `sip-teleport evacuate --to dc2` with these options. */
const evacuate = (...options: string[]) =>
  runCli(["evacuate", "-c", configFile(pair, "dc1"), "--to", pair.dc2.uri, ...options]);

test("--dedup on without a group commit is refused before any offer (exit 2), the VM stays", async () => {
  const cli = evacuate("--strategy", "sequential", "--dedup", "on");
  expect(await cli.exited).toBe(2);
  expect(cli.output()).toMatch(/dedup on: it needs a group commit/);
  expect(cli.output()).not.toContain("offering");
  expect(placement(pair).router1).toEqual(["dc1"]);
});

test("--compress xbzrle reaches the dialog: the VM moves with it, and the report says so", async () => {
  const cli = evacuate("--compress", "xbzrle", "--bandwidth-mbps", "400", "--json");
  const code = await cli.exited;
  expect({ code, output: code === 0 ? "" : cli.output() }).toEqual({ code: 0, output: "" });
  const report = JSON.parse(cli.output().trim().split("\n").at(-1) ?? "{}") as EvacuationReport;
  expect(report.vms).toEqual([
    expect.objectContaining({ vm: "router1", state: "moved", runsOn: pair.dc2.uri, reductions: ["xbzrle"] }),
  ]);
  expect(placement(pair).router1).toEqual(["dc2"]);
});
