/** `sip-teleport nrdl ...`: in-process through buildProgram, plus one spawn of the built CLI. */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CommanderError } from "commander";
import { buildProgram } from "../../agents/cli";
import type { CliIo } from "../../agents/io";
import { buildNrdl, exampleOffer, parseNrdl } from "../../nrdl";
import { offer, vm } from "./helpers";

const ROOT = join(__dirname, "..", "..");

async function run(args: string[], stdin = ""): Promise<{ code: number; out: string; err: string }> {
  const got = { code: 0, out: "", err: "" };
  const io: CliIo = {
    out: (t) => void (got.out += t),
    err: (t) => void (got.err += t),
    readStdin: async () => stdin,
    setExitCode: (c) => void (got.code = c),
  };
  const program = buildProgram(io).exitOverride();
  for (const sub of program.commands) sub.exitOverride().commands.forEach((c) => c.exitOverride());
  try {
    await program.parseAsync(["node", "sip-teleport", ...args]);
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    got.code = err.exitCode;
  }
  return got;
}

let dir: string;
beforeAll(() => (dir = mkdtempSync(join(tmpdir(), "nrdl-cli-"))));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test.each([
  ["exp1", "valid NRDL v1 offer mig-exp1: 2 VMs (router1, router2), strategy sequential"],
  ["exp2", "valid NRDL v1 offer mig-exp2: 2 VMs (router1, video), strategy sequential"],
  ["exp3", "valid NRDL v1 offer mig-exp3: 4 VMs (firewall, router-switch, storage, web), strategy sequential"],
])("nrdl example %s prints the built offer, and validate - accepts it", async (name, line) => {
  const example = await run(["nrdl", "example", name]);
  expect(example).toEqual({ code: 0, out: buildNrdl(exampleOffer(name as "exp1")), err: "" });
  expect(await run(["nrdl", "validate", "-"], example.out)).toEqual({ code: 0, out: `${line}\n`, err: "" });
});

test("nrdl example refuses an unknown experiment", async () => {
  const got = await run(["nrdl", "example", "exp4"]);
  expect(got.code).toBe(1);
  expect(got.err).toContain("Allowed choices are exp1, exp2, exp3");
});

test("nrdl validate FILE: exit 2 and one line per violation on stderr", async () => {
  const file = join(dir, "bad.xml");
  writeFileSync(file, offer(vm("a;b") + vm("c", 'cpus="0"', ["zz"])));
  expect(await run(["nrdl", "validate", file])).toEqual({
    code: 2,
    out: "",
    err:
      '/nrdl/offer/vm[1]/@name: expected a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,63}, got "a;b"\n' +
      '/nrdl/offer/vm[2]/@cpus: expected a positive integer, got "0"\n' +
      '/nrdl/offer/vm[2]/depends-on[1]/@vm: expected the name of a VM in this offer, got "zz"\n',
  });
});

test("nrdl validate summarises every body kind", async () => {
  const bodies: Array<[string, string]> = [
    [
      '<answer><armed vm="a" uri="tcp:10.0.0.2:49152" secret="0123456789abcdef"/><rejected vm="b" ' +
        'reason="no room"/></answer>',
      "answer m: 1 armed (a), 1 rejected (b)",
    ],
    [
      '<status vm="a" state="migrating" progress="0.5"/><status vm="b" state="completed"/>',
      "status m: a migrating, b completed",
    ],
    [
      '<report outcome="partial"><result vm="a" state="completed" host="dc2"/><result vm="b" ' +
        'state="failed" host="dc1"/></report>',
      "report m: outcome partial, a completed, b failed",
    ],
  ];
  for (const [body, summary] of bodies) {
    const got = await run(
      ["nrdl", "validate", "-"],
      `<nrdl xmlns="urn:sip-teleport:nrdl:1" version="1" id="m">${body}</nrdl>`,
    );
    expect(got).toEqual({ code: 0, out: `valid NRDL v1 ${summary}\n`, err: "" });
  }
});

test("nrdl validate on a missing file: exit 1 and why", async () => {
  const got = await run(["nrdl", "validate", join(dir, "nope.xml")]);
  expect(got.code).toBe(1);
  expect(got.err).toMatch(/^sip-teleport: cannot read .*nope\.xml: ENOENT/);
});

test("help teaches each command with an example", async () => {
  const top = await run(["--help"]);
  expect(top.out).toContain("$ sip-teleport nrdl example exp2 | sip-teleport nrdl validate -");
  const nrdl = await run(["nrdl", "--help"]);
  expect(nrdl.out).toContain("$ sip-teleport nrdl validate offer.xml");
  expect(nrdl.out).toContain("$ sip-teleport nrdl example exp3");
  expect((await run(["nrdl", "validate", "--help"])).out).toContain(
    "Example:\n  $ sip-teleport nrdl example exp2 | sip-teleport nrdl validate -",
  );
  expect((await run(["nrdl", "example", "--help"])).out).toContain(
    "Example:\n  $ sip-teleport nrdl example exp2 > offer.xml",
  );
});

test("the built CLI works as the README says: example | validate -", () => {
  execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: ROOT });
  const cli = join(ROOT, "dist", "agents", "cli.js");
  const example = execFileSync("node", [cli, "nrdl", "example", "exp2"], { encoding: "utf8" });
  expect(parseNrdl(example).ok).toBe(true);
  const ok = spawnSync("node", [cli, "nrdl", "validate", "-"], { input: example, encoding: "utf8" });
  expect([ok.status, ok.stdout]).toEqual([
    0,
    "valid NRDL v1 offer mig-exp2: 2 VMs (router1, video), strategy sequential\n",
  ]);
  const bad = spawnSync("node", [cli, "nrdl", "validate", "-"], {
    input: example.replace('memory-mib="512"', 'memory-mib="-5"'),
    encoding: "utf8",
  });
  expect([bad.status, bad.stdout, bad.stderr]).toEqual([
    2,
    "",
    '/nrdl/offer/vm[2]/@memory-mib: expected a positive integer, got "-5"\n',
  ]);
});
