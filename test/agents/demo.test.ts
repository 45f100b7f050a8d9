/**
 * The README's quick start: `npm run demo` moves two real VMs between two local agents over SIP
 * with the embedded defaults. Run as the built CLI, as the quick start runs it; a default that
 * breaks the demo (issue 26's `defaults.compress` once did) fails here, not on a user's machine.
 */
import path from "node:path";
import execa from "execa";
import { repoRoot } from "../../lib/version";

test("sip-teleport demo moves both VMs and says OK", async () => {
  const cli = path.join(repoRoot(), "dist", "agents", "cli.js");
  const r = await execa(process.execPath, [cli, "demo"], { reject: false, timeout: 110_000, all: true });
  expect({ exitCode: r.exitCode, tail: r.all?.split("\n").slice(-12) }).toEqual({
    exitCode: 0,
    tail: expect.arrayContaining(["demo: OK", expect.stringMatching(/^ {2}router1 +dc2 \(running\)$/)]),
  });
}, 120_000);
