/**
 * Teleport secrets stay secret: a full migration logged at debug level with SIP traces on both
 * agents (the 200 OK carries `secret="..."`) never shows one, nor its derived TLS-PSK, nor the
 * digest password; the key file exists only while a listener waits (mode 0600 in a 0700 folder)
 * and no file under either host's run or state folder holds a secret afterwards.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import winston from "winston";
import type { ArmOptions, HypervisorDriver } from "../../lib/hypervisor/driver";
import { createLogger, type Logger } from "../../lib/log/logger";
import { buildNrdl, offerDocument } from "../../nrdl";
import { NRDL_MIME } from "../../nrdl/types";
import { bootOnSource, expectAllOn, guestDefs, placement, SEQUENTIAL, pairPerTest, extraSource } from "../harness";

const policy = { ...SEQUENTIAL, strategy: "parallel" as const, maxParallel: 2 };
const PASSWORD = "digest-pw-that-must-not-leak";

/** A logger with the project's formats (masking included) that writes into a string. */
function capturingLogger(): { logger: Logger; text: () => string } {
  const logger = createLogger({ level: "debug", format: "json" });
  const sink = new PassThrough();
  let text = "";
  sink.on("data", (c: Buffer) => (text += c.toString("utf8")));
  logger.clear();
  logger.add(new winston.transports.Stream({ stream: sink }));
  return { logger, text: () => text };
}

function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : e.isFile() ? [p] : [];
  });
}

/** Record the secrets the destination arms with, and check the key file while each listener waits. */
function watchArming(driver: HypervisorDriver, runDir: string, seen: string[], keyFiles: string[]): void {
  const arm = driver.arm.bind(driver);
  driver.arm = async (vm: string, o: ArmOptions) => {
    seen.push(o.secret);
    const armed = await arm(vm, o);
    const dir = path.join(runDir, `${vm}.psk-in`);
    keyFiles.push(
      `${vm} dir ${(fs.statSync(dir).mode & 0o777).toString(8)} file ` +
        `${(fs.statSync(path.join(dir, "keys.psk")).mode & 0o777).toString(8)}`,
    );
    const pid = Number(fs.readFileSync(path.join(runDir, `${vm}.pid`), "utf8"));
    expect(fs.readFileSync(`/proc/${pid}/cmdline`, "utf8")).not.toContain(o.secret);
    return armed;
  };
}

function leaks(text: string, secrets: string[]): string[] {
  const psk = (s: string) => createHash("sha256").update(s, "utf8").digest("hex");
  return secrets
    .flatMap((s) => [s, psk(s)])
    .concat(PASSWORD)
    .filter((s) => text.includes(s));
}

describe("teleport secrets", () => {
  const start = pairPerTest();

  it("never reach the logs (SIP trace, debug) or the disk in clear, and leave with the listener", async () => {
    const capture = capturingLogger();
    const pair = await start(
      await guestDefs([
        ["router1", "router"],
        ["video", "server"],
      ]),
      {
        logger: capture.logger,
        dc1: { sip: { trace: true } },
        dc2: { sip: { trace: true }, security: { users: { dc1: PASSWORD } } },
      },
    );
    const secrets: string[] = [];
    const keyFiles: string[] = [];
    for (const d of pair.dc2.host.drivers()) watchArming(d, pair.dc2.runDir, secrets, keyFiles);
    await bootOnSource(pair);
    const credentials = { username: "dc1", password: PASSWORD };
    const source = await extraSource(pair, { trace: true, credentials }, capture.logger);
    const summary = await source.agent.migrate({ to: pair.dc2.uri, vms: ["router1", "video"], policy });
    await source.stop();
    expect(summary.outcome).toBe("completed");
    await expectAllOn(pair, "dc2");

    expect(secrets).toHaveLength(2);
    for (const s of secrets) expect(Buffer.from(s, "base64url").length).toBeGreaterThanOrEqual(16); // >= 128 bits
    expect(new Set(secrets).size).toBe(2); // one per VM
    expect(keyFiles.sort()).toEqual(["router1 dir 700 file 600", "video dir 700 file 600"]);
    const log = capture.text();
    expect(log).toMatch(/secret=\\"<masked>\\"/); // the 200 OK was traced, masked
    expect(log).toMatch(/Authorization: Digest <masked>/);
    expect(leaks(log, secrets)).toEqual([]);
    const files = filesUnder(pair.base);
    expect(files.filter((f) => /psk/.test(f))).toEqual([]);
    expect(files.filter((f) => leaks(fs.readFileSync(f, "latin1"), secrets).length > 0)).toEqual([]);
  });

  it("are removed at disarm: a dialog ended by BYE before any migration leaves no key file", async () => {
    const pair = await start(await guestDefs([["router1", "router"]]));
    const secrets: string[] = [];
    const keyFiles: string[] = [];
    for (const d of pair.dc2.host.drivers()) watchArming(d, pair.dc2.runDir, secrets, keyFiles);
    const content = buildNrdl(
      offerDocument({
        id: "mig-disarm",
        sourceUri: "sip:dc1@127.0.0.1",
        destinationUri: "sip:dc2@127.0.0.1",
        vms: [{ name: "router1", memoryMib: 96 }],
      }),
    );
    const { dialog } = await pair.dc1.sip.invite(pair.dc2.uri, { contentType: NRDL_MIME, content }).established;
    expect(keyFiles).toEqual(["router1 dir 700 file 600"]);
    expect(placement(pair).router1).toEqual(["dc2"]);
    await dialog.bye();
    expect(placement(pair).router1).toEqual([]);
    const files = filesUnder(pair.base);
    expect(files.filter((f) => /psk/.test(f))).toEqual([]);
    expect(files.filter((f) => leaks(fs.readFileSync(f, "latin1"), secrets).length > 0)).toEqual([]);
  });
});
