/**
 * Where VMs may go, from the command line: `migrate --to` a destination that
 * security.destinations does not list is refused before anything is sent (exit 2, the reason
 * and the way out), and moves only when the operator says --allow-unlisted-destination.
 * The console's API, page and MESSAGE trigger are covered in test/console/.
 */
import { ensureBuilt, runCli } from "../e2e/cli-process";
import { bootOnSource, configFile, expectAllOn, guestDefs, startPair, type Pair } from "../harness";

jest.setTimeout(120_000);

describe("migrate --to and security.destinations", () => {
  let pair: Pair;
  beforeAll(async () => {
    ensureBuilt();
    pair = await startPair(await guestDefs([["router1", "router"]]));
    await bootOnSource(pair);
  });
  afterAll(async () => pair?.close());

  it("refuses an unlisted destination with the reason, then moves with --allow-unlisted-destination", async () => {
    const file = configFile(pair, "dc1", {
      security: { ...pair.dc1.cfg.security, destinations: ["sip:dc7@127.0.0.1"] },
    });
    const refused = runCli(["migrate", "-c", file, "--to", pair.dc2.uri, "--json", "router1"]);
    expect(await refused.exited).toBe(2);
    expect(refused.output()).toContain(
      "sip-teleport: 403 destination not permitted\n" +
        "  sip:dc2@127.0.0.1 is not a permitted destination (security.destinations: sip:dc7@127.0.0.1)\n" +
        "  add it to security.destinations, or pass --allow-unlisted-destination to send there this once\n",
    );
    expect(pair.dc2.trace.filter((e) => e.message.startsWith("INVITE "))).toEqual([]);
    await expectAllOn(pair, "dc1");

    const allowed = runCli([
      "migrate",
      "-c",
      file,
      "--to",
      pair.dc2.uri,
      "--json",
      "--allow-unlisted-destination",
      "router1",
    ]);
    expect(await allowed.exited).toBe(0);
    await expectAllOn(pair, "dc2");
  });
});
