/**
 * `sip-teleport vm ...` on a real QEMU: every command builds its drivers afresh from the inventory
 * and run dir (as separate CLI runs do), so start, status, list and stop only meet through the
 * pidfiles and monitors the VM leaves behind.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { buildProgram } from "../../agents/cli";
import { livePid, terminate } from "../../lib/hypervisor/pidfile";
import { ensureGuest, guestVm } from "../../lib/guest/guest";

jest.setTimeout(60_000);

let dir: string;
let inventory: string;
let runDir: string;

beforeAll(async () => {
  const guest = await ensureGuest();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-cli-"));
  inventory = path.join(dir, "host.json");
  runDir = path.join(dir, "run");
  const vm = { ...guestVm(guest, "cli-vm"), nics: [{ kind: "user", mac: "52:54:00:00:00:21" }] };
  fs.writeFileSync(inventory, JSON.stringify({ vms: [vm, { ...guestVm(guest, "idle"), role: "router" }] }, null, 2));
});

afterAll(async () => {
  const pid = livePid(path.join(runDir, "cli-vm.pid"));
  if (pid !== undefined) await terminate(pid, 500);
  fs.rmSync(dir, { recursive: true, force: true });
});

async function run(...args: string[]): Promise<string> {
  const out: string[] = [];
  const spy = jest.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    out.push(String(chunk));
    return true;
  });
  try {
    await buildProgram()
      .exitOverride()
      .parseAsync(["node", "sip-teleport", "vm", ...args, "--inventory", inventory, "--run-dir", runDir]);
  } finally {
    spy.mockRestore();
  }
  return out.join("");
}

test("start, status, list, stop", async () => {
  expect(await run("start", "cli-vm")).toMatch(/^cli-vm\s+running\s+qemu server 96 MiB\n$/);
  const pid = livePid(path.join(runDir, "cli-vm.pid"));
  expect(pid).toBeDefined();
  expect(JSON.parse(await run("status", "cli-vm", "--json"))).toEqual([
    { name: "cli-vm", hypervisor: "qemu", role: "server", memoryMib: 96, state: "running" },
  ]);
  const list = await run("list");
  expect(list).toMatch(/^cli-vm\s+running/m);
  expect(list).toMatch(/^idle\s+absent\s+qemu router/m);
  await expect(run("start", "cli-vm")).rejects.toMatchObject({ status: 486 });
  await expect(run("status", "ghost")).rejects.toThrow(
    /404 VM ghost is not defined on this host: defined: cli-vm, idle/,
  );
  expect(await run("stop", "cli-vm")).toMatch(/^cli-vm\s+absent/);
  expect(livePid(path.join(runDir, "cli-vm.pid"))).toBeUndefined();
  expect(fs.readdirSync(runDir).filter((f) => !f.endsWith(".log"))).toEqual([]);
});

test("list on an empty inventory says so, and which configuration and inventory it read", async () => {
  const config = path.join(dir, "empty.json");
  fs.writeFileSync(config, "{}");
  const out: string[] = [];
  const spy = jest.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    out.push(String(chunk));
    return true;
  });
  try {
    await buildProgram().exitOverride().parseAsync(["node", "sip-teleport", "vm", "list", "-c", config]);
  } finally {
    spy.mockRestore();
  }
  expect(out.join("")).toBe(
    `no VMs: the inventory is empty\n  used configuration ${config}\n  inventory: inline in the configuration\n`,
  );
});
