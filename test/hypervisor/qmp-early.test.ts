/** The monitor of a starting QEMU, connected once its socket appears: against a socket that greets like QMP. */
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { connectOnCreate } from "../../lib/hypervisor/qmp-early";

let dir: string;
const servers: net.Server[] = [];
beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "st-qmp-early-"))));
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A QMP monitor at `sock`: greets, answers every command with an empty return; counts connections. */
function monitor(sock: string): { connections: net.Socket[]; listening: Promise<void> } {
  const connections: net.Socket[] = [];
  const server = net.createServer((c) => {
    connections.push(c);
    c.write(JSON.stringify({ QMP: { version: {}, capabilities: [] } }) + "\n");
    c.on("data", (d) => {
      for (const line of d.toString().split("\n").filter(Boolean))
        c.write(JSON.stringify({ return: {}, id: JSON.parse(line).id }) + "\n");
    });
  });
  servers.push(server);
  return { connections, listening: new Promise((r) => server.listen(sock, () => r())) };
}

test("connects once the socket is created after the call, and hands the connection over", async () => {
  const sock = path.join(dir, "vm.qmp");
  const early = connectOnCreate(sock);
  const qemu = monitor(sock); // "QEMU" binds its monitor after we began watching
  await qemu.listening;
  const client = await early.connected;
  expect(await client.execute("query-status")).toEqual({});
  expect(await early.finish(true)).toBe(client);
  expect(qemu.connections).toHaveLength(1);
  await client.close();
});

test("a socket that is already there is connected at once", async () => {
  const sock = path.join(dir, "vm.qmp");
  await monitor(sock).listening;
  const early = connectOnCreate(sock);
  const client = await early.finish(true);
  expect(client).toBeDefined();
  await client?.close();
});

test("no socket by the time QEMU has started: nothing, and the caller connects itself", async () => {
  const early = connectOnCreate(path.join(dir, "vm.qmp"));
  expect(await early.finish(true)).toBeUndefined();
  // a socket that appears afterwards is not connected to: the watch has ended
  const qemu = monitor(path.join(dir, "vm.qmp"));
  await qemu.listening;
  await new Promise((r) => setImmediate(r));
  expect(qemu.connections).toHaveLength(0);
});

test("a socket bound but not accepting (refused) gives nothing rather than an error", async () => {
  const sock = path.join(dir, "vm.qmp");
  const early = connectOnCreate(sock);
  fs.writeFileSync(sock, ""); // a file by that name, not a listening socket: connect is refused
  await new Promise((r) => setTimeout(r, 50));
  expect(await early.finish(true)).toBeUndefined();
});

test("a QEMU that failed to start: its connection is not kept", async () => {
  const sock = path.join(dir, "vm.qmp");
  const qemu = monitor(sock);
  await qemu.listening;
  const early = connectOnCreate(sock);
  const client = await early.connected;
  expect(await early.finish(false)).toBeUndefined();
  await client.closed; // closed by finish(false)
  expect(client.isClosed).toBe(true);
});
