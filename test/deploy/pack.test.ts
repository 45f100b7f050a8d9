/**
 * The package as users get it: `npm pack` (its prepack builds), installed into an empty folder
 * like any registry package, then run through `npx sip-teleport`. Also what the tarball must not
 * carry (tests, TypeScript sources, source maps, build caches).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import execa from "execa";

const ROOT = path.join(__dirname, "..", "..");

describe("npm package", () => {
  let dir: string;
  let files: string[];
  const npx = (...args: string[]) =>
    execa("npx", ["--no-install", "sip-teleport", ...args], { cwd: path.join(dir, "app"), reject: false });

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-pack-"));
    const packed = await execa("npm", ["pack", "--json", "--pack-destination", dir], { cwd: ROOT });
    // prepack's build logs precede the JSON on stdout
    const report = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("[\n"))) as Array<{
      filename: string;
      files: Array<{ path: string }>;
    }>;
    files = report[0].files.map((f) => f.path);
    fs.mkdirSync(path.join(dir, "app"));
    fs.writeFileSync(
      path.join(dir, "app", "package.json"),
      JSON.stringify({ name: "app", version: "1.0.0", private: true }),
    );
    await execa("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", path.join(dir, report[0].filename)], {
      cwd: path.join(dir, "app"),
    });
  }, 240_000);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("carries the built JavaScript, its types, the operator's files and the demo's guest builder, nothing else", () => {
    expect(files).toEqual(
      expect.arrayContaining([
        "package.json",
        "README.md",
        "dist/index.js",
        "dist/index.d.ts",
        "dist/agents/cli.js",
        "nrdl/SPEC.md",
        "docs/operators.md",
        "deploy/systemd/sip-teleport-listen.service",
        "deploy/kamailio/kamailio.cfg",
      ]),
    );
    // `sip-teleport demo` builds its guest with lib/guest's script, and a destination builds its MAC claim
    // helper from lib/net's C source: the non-JavaScript files of lib/ shipped
    expect(files).toEqual(
      expect.arrayContaining(["lib/guest/build-guest.sh", "dist/lib/guest/guest.js", "lib/net/host-announce.c"]),
    );
    const unwanted = files.filter(
      (f) =>
        /^(test|\.cache|bench|node_modules|dist\/(test|bench))\//.test(f) ||
        /\.map$/.test(f) ||
        (/\.ts$/.test(f) && !/\.d\.ts$/.test(f)),
    );
    expect(unwanted).toEqual([]);
  });

  it("runs as `npx sip-teleport --help`", async () => {
    const r = await npx("--help");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^Usage: sip-teleport /);
    expect(r.stdout).toMatch(/listen|migrate/);
  });

  it("prints the thesis' experiment 2 offer with `npx sip-teleport nrdl example exp2`", async () => {
    const r = await npx("nrdl", "example", "exp2");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/<nrdl[\s\S]*router1[\s\S]*video/);
  });

  it("checks the packaged example configs: images missing here are named, --no-images checks the rest", async () => {
    const dc2 = path.join("node_modules", "sip-teleport", "deploy", "config", "dc2.json");
    const full = await npx("config", "check", dc2);
    const imagesHere = fs.existsSync("/var/lib/sip-teleport/images/vmlinuz");
    expect(full.exitCode).toBe(imagesHere ? 0 : 2);
    if (!imagesHere)
      expect(full.stderr).toContain("vm video: initrd /var/lib/sip-teleport/images/initramfs.gz does not exist");
    const schema = await npx("config", "check", "--no-images", dc2);
    expect({ code: schema.exitCode, out: schema.stdout.trim() }).toEqual({ code: 0, out: `${dc2}: OK` });
  });

  it("serves the library API from its main entry", async () => {
    const script =
      'const t = require("sip-teleport"); console.log([typeof t.DestinationAgent, typeof ' +
      "t.SourceAgent, typeof t.createSipBackend, typeof t.createDriver, typeof t.Host, typeof " +
      't.loadConfig, typeof t.validateNrdl].join(","))';
    const r = await execa("node", ["-e", script], { cwd: path.join(dir, "app") });
    expect(r.stdout).toBe(Array(7).fill("function").join(","));
  });
});
