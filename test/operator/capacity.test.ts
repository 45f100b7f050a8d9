/**
 * Capacity: a real destination agent answers an OPTIONS asking for NRDL with what it can receive,
 * and `sip-teleport destinations` (its own process) lists every destination with its answer.
 */
import { askCapacity } from "../../agents/source/capacity-query";
import { memoryAvailableMib } from "../../agents/destination/capacity";
import { SUPPORTED_VERSIONS } from "../../nrdl/types";
import { runCli } from "../e2e/cli-process";
import { configFile, type Pair } from "../harness";
import { exp2Pair } from "./exp2-pair";

jest.setTimeout(60_000);

let pair: Pair;
beforeAll(async () => (pair = await exp2Pair()));
afterAll(() => pair?.close());

test("the destination advertises free memory, disk, ports, receivable VMs, hypervisors and NRDL versions", async () => {
  const before = await askCapacity(pair.dc1.sip, pair.dc2.uri);
  expect(before).toMatchObject({ status: 200 });
  const c = before.capacity;
  expect(c).toMatchObject({ kind: "capacity", host: "dc2", portsFree: 50, vmsReceivable: 2, hypervisors: "qemu" });
  expect(c?.versions).toBe(SUPPORTED_VERSIONS.join(" "));
  // MemAvailable minus the 256 MiB reserve, give or take what other processes did meanwhile
  expect(Math.abs((c?.memoryFreeMib ?? 0) - (memoryAvailableMib() - 256))).toBeLessThan(1024);
  expect(c?.diskFreeMib).toBeGreaterThan(0);

  // a VM running at the destination can no longer be received there
  await pair.dc2.host.find("video")?.driver.start("video");
  const after = await askCapacity(pair.dc1.sip, pair.dc2.uri);
  expect(after.capacity?.vmsReceivable).toBe(1);
  await pair.dc2.host.find("video")?.driver.stop("video");
});

test("`sip-teleport destinations` lists destinations with their answers, and says which did not answer", async () => {
  const dead = "sip:dc3@127.0.0.1:1;transport=tcp"; // nothing listens on port 1: connection refused
  const config = configFile(pair, "dc1", { console: { destinations: [pair.dc2.uri] } });
  const cli = runCli(["destinations", "-c", config, "--to", dead]);
  expect(await cli.exited).toBe(1);
  const out = cli.output();
  expect(out).toMatch(
    /^destination\s+answer\s+host\s+memory free\s+disk free\s+ports\s+receivable\s+hypervisors\s+NRDL$/m,
  );
  const row = out.split("\n").find((l) => l.startsWith(pair.dc2.uri)) ?? "";
  expect(row).toMatch(
    new RegExp(
      String.raw`200 OK \(\d+ ms\)\s+dc2\s+\d+ MiB\s+\d+ MiB\s+50\s+2\s+qemu\s+${SUPPORTED_VERSIONS.join(" ")}$`,
    ),
  );
  expect(out).toMatch(new RegExp(`^${dead.replace(/[.;]/g, "\\$&")}\\s+5\\d\\d `, "m"));

  const json = runCli(["destinations", "-c", config, "--json"]);
  expect(await json.exited).toBe(0);
  const answers = JSON.parse(json.output()) as Array<{ uri: string; capacity?: { host: string } }>;
  expect(answers.map((a) => [a.uri, a.capacity?.host])).toEqual([[pair.dc2.uri, "dc2"]]);
});
