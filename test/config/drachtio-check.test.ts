/**
 * `config check` with sip.backend "drachtio": the connection is validated, the secret read from
 * a file or the environment, and a real drachtio-server is asked whether it accepts it.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { checkConfig } from "../../agents/commands/config";
import { parseConfig } from "../../lib/config/load";
import { startDrachtioServer, type DrachtioServer } from "../../lib/sip/drachtio/server-process";
import { describeDrachtio } from "../harness/drachtio";

describeDrachtio("config check: drachtio backend", () => {
  let server: DrachtioServer;
  let dir: string;
  beforeAll(async () => {
    server = await startDrachtioServer();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-drachtio-check-"));
  });
  afterAll(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const write = (drachtio: Record<string, unknown>, secret?: string): string => {
    const secretFile = path.join(dir, "secret");
    if (secret !== undefined) fs.writeFileSync(secretFile, secret + "\n", { mode: 0o600 });
    const file = path.join(dir, "host.json");
    const d = { host: server.address, port: server.adminPort, ...drachtio };
    if (secret !== undefined) Object.assign(d, { secretFile });
    fs.writeFileSync(file, JSON.stringify({ host: "dc2", sip: { backend: "drachtio", drachtio: d }, inventory: [] }));
    return file;
  };

  test("a backend without its connection, or with two secret sources, is refused by the schema", () => {
    expect(() => parseConfig({ sip: { backend: "drachtio" } })).toThrow(/sip.drachtio/);
    expect(() => parseConfig({ sip: { backend: "drachtio", drachtio: { secretFile: "/x", secretEnv: "X" } } })).toThrow(
      /exactly one of secretFile or secretEnv/,
    );
  });

  test("the right secret: OK; a wrong one: refused; an unset variable: named; a dead port: no answer", async () => {
    expect(await checkConfig(write({}, server.secret), { images: false })).toEqual([]);
    const wrong = await checkConfig(write({}, "not-the-secret"), { images: false });
    expect(wrong.join()).toMatch(/refused the secret/);
    expect(wrong.join()).not.toContain("not-the-secret");
    const unset = await checkConfig(write({ secretEnv: "ST_TEST_UNSET_DRACHTIO_SECRET" }), { images: false });
    expect(unset.join()).toMatch(/ST_TEST_UNSET_DRACHTIO_SECRET is not set/);
    const dead = await checkConfig(write({ port: 1 }, server.secret), { images: false });
    expect(dead.join()).toMatch(/does not answer/);
  });
});
