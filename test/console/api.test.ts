/**
 * The console's JSON API over HTTP, as a script would use it, against a real destination agent
 * and a real QEMU VM (router1) on loopback: the token, the refusals, Cancel, Call/Migrate/Bye with
 * live state on the event stream, and the history kept across a restart.
 */
import { ApiAuth } from "../../agents/console/auth";
import type { LineSnapshot } from "../../agents/console/session";
import type { HistoryEntry, HistoryRecord } from "../../agents/console/history";
import type { MigrateSummary } from "../../agents/source/agent";
import type { IncomingMessage } from "node:http";
import path from "node:path";
import { randomPort, runSipp } from "../../bench/sipp";
import { FIXTURES } from "../sip/helpers";
import { apiClient, eventStream, request, type ApiClient } from "./http";
import { startStack, until, type Stack } from "./stack";

jest.setTimeout(120_000);

const TOKEN = "console-test-token-0123456789";
let stack: Stack;
let api: ApiClient;

beforeAll(async () => {
  stack = await startStack({ vms: ["router1"], token: TOKEN });
  api = apiClient(stack.console.url, TOKEN);
});

afterAll(async () => {
  await stack?.close();
});

const state = async () => (await api.get<LineSnapshot>("/api/state")).body;

describe("who may use the API", () => {
  test("a configured token is required, even on loopback; the page itself is public", async () => {
    const bare = apiClient(stack.console.url);
    expect((await bare.get("/api/inventory")).status).toBe(401);
    expect((await apiClient(stack.console.url, "wrong-token-wrong-token").get("/api/inventory")).status).toBe(401);
    expect((await api.get("/api/inventory")).status).toBe(200);
    const page = await request(stack.console.url, "GET", {});
    expect(page.status).toBe(200);
    expect(page.text).toContain("<title>sip-teleport console</title>");
  });

  test("a foreign Host header (DNS rebinding) and form posts are refused", async () => {
    expect((await api.get("/api/inventory", { host: "evil.example:80" })).status).toBe(421);
    const form = await request(
      new URL("/api/call", stack.console.url).href,
      "POST",
      { authorization: `Bearer ${TOKEN}`, "content-type": "text/plain" },
      "{}",
    );
    expect(form.status).toBe(415);
  });

  test("a token is generated when none is configured, off loopback and on it, and required", () => {
    const auth = new ApiAuth("10.10.10.66", undefined);
    expect(auth.generated).toBe(true);
    expect(auth.token).toMatch(/^[\w-]{32}$/);
    const req = (headers: Record<string, string>) => ({ method: "GET", headers }) as unknown as IncomingMessage;
    const url = new URL("http://10.10.10.66:8080/api/state");
    expect(auth.check(req({ host: "10.10.10.66:8080" }), url)?.status).toBe(401);
    expect(auth.check(req({ host: "10.10.10.66:8080", authorization: `Bearer ${auth.token}` }), url)).toBeUndefined();
    expect(
      auth.check(req({ host: "10.10.10.66:8080" }), new URL(`${url.href}?access_token=${auth.token}`)),
    ).toBeUndefined();
    const local = new ApiAuth("127.0.0.1", undefined);
    expect(local.token).toMatch(/^[\w-]{32}$/);
    expect(local.check(req({ host: "127.0.0.1:8080" }), new URL("http://127.0.0.1:8080/api/state"))?.status).toBe(401);
  });

  test("only the page's own files are served", async () => {
    for (const p of ["/%2e%2e/package.json", "/static/../../package.json", "/agent.ts"]) {
      expect((await request(new URL(p, stack.console.url).href, "GET", {})).status).toBe(404);
    }
  });
});

describe("before the VM runs", () => {
  test("the inventory shows it absent, and Call refuses without sending an INVITE", async () => {
    const inv = await api.get<{ vms: Array<{ name: string; state: string; role: string; memoryMib: number }> }>(
      "/api/inventory",
    );
    expect(inv.body.vms).toEqual([
      expect.objectContaining({ name: "router1", role: "router", memoryMib: 96, state: "absent" }),
    ]);
    const call = await api.post<{ error: { status: number; details: string[] } }>("/api/call", {
      to: stack.dest.uri,
      vms: ["router1"],
    });
    expect(call.status).toBe(409);
    expect(call.body.error.details.join()).toMatch(/router1 is absent here/);
    expect((await state()).ladder).toEqual([]);
    expect((await api.get<{ dialogs: HistoryEntry[] }>("/api/history")).body.dialogs).toEqual([]);
  });

  test("invalid requests say what is wrong", async () => {
    const bad = await api.post<{ error: { status: number; details: string[] } }>("/api/call", {
      to: "dc2",
      vms: ["router1"],
      extra: 1,
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error.details.join("\n")).toMatch(/to: expected a SIP URI/);
    expect((await api.post("/api/migrate")).status).toBe(409);
    expect((await api.post("/api/bye")).status).toBe(409);
    expect((await api.get("/api/history/1-nope")).status).toBe(404);
    const evacuate = await api.post<{ error: { status: number; details: string[] } }>("/api/evacuate", {
      to: ["sip:dc9@192.0.2.66"],
    });
    expect([evacuate.status, evacuate.body.error.details]).toEqual([
      403,
      [expect.stringMatching(/^sip:dc9@192\.0\.2\.66 is not a permitted destination/)],
    ]);
    expect((await api.post("/api/evacuate", { to: "sip:dc2@127.0.0.1" })).status).toBe(400);
  });
});

describe("a dialog", () => {
  beforeAll(async () => {
    await stack.boot("router1");
  });

  test("Dry run asks the destination (OPTIONS) and leaves the line, the VM and the history as they were", async () => {
    const before = await state();
    const ok = await api.post<{
      dryRun: { status: number; preview: { accepted: Array<{ vm: string; compress?: string }> } };
      text: string;
    }>("/api/dry-run", { to: stack.dest.uri, vms: ["router1"], policy: { bandwidthMbps: 100 } });
    expect(ok.status).toBe(200);
    expect(ok.body.dryRun.status).toBe(200);
    // capped: the host's defaults.compress (auto) offers compression, and the destination's QEMU takes zstd
    expect(ok.body.dryRun.preview.accepted).toMatchObject([{ vm: "router1", compress: "zstd" }]);
    const plain = await api.post<{ dryRun: { preview: { accepted: Array<{ compress?: string }> } } }>("/api/dry-run", {
      to: stack.dest.uri,
      vms: ["router1"],
      policy: { bandwidthMbps: 100 },
      compress: "none",
    });
    expect(plain.body.dryRun.preview.accepted[0].compress).toBeUndefined();
    expect((await api.post("/api/dry-run", { to: stack.dest.uri, vms: ["router1"], compress: "lz4" })).status).toBe(
      400,
    );
    // group page dedup as `migrate --dedup`: with the group commit a switchover asks for, and refused without one
    const grouped = await api.post<{ dryRun: { preview: { accepted: Array<{ vm: string; dedup?: string }> } } }>(
      "/api/dry-run",
      { to: stack.dest.uri, vms: ["router1"], policy: { strategy: "switchover" }, dedup: "on" },
    );
    expect(grouped.body.dryRun.preview.accepted).toMatchObject([{ vm: "router1", dedup: "on" }]);
    const lone = await api.post<{ error: { details: string[] } }>("/api/dry-run", {
      to: stack.dest.uri,
      vms: ["router1"],
      policy: { strategy: "sequential" },
      dedup: "on",
    });
    expect([lone.status, lone.body.error.details]).toEqual([
      400,
      [expect.stringMatching(/^dedup on: it needs a group/)],
    ]);
    expect(ok.body.text).toContain("would accept the offer (200 OK); nothing was armed or moved");
    expect(ok.body.text).toMatch(/^1\s+router1\s+96 MiB\s+~8\.9 s/m);
    // the same access control as an INVITE: the strict destination refuses the question too
    const strict = await api.post<{ dryRun: { status: number }; text: string }>("/api/dry-run", {
      to: stack.strict.uri,
      vms: ["router1"],
    });
    expect(strict.body.dryRun.status).toBe(403);
    expect(strict.body.text).toContain("would refuse the offer (403 Forbidden)");
    expect((await state()).phase).toBe(before.phase);
    expect((await api.get<{ dialogs: unknown[] }>("/api/history")).body.dialogs).toEqual([]);
    expect(await stack.whereRuns("router1")).toEqual(["dc1"]);
  });

  test("a destination outside security.destinations: 403 from the console, no INVITE sent", async () => {
    const before = await state();
    const call = await api.post<{ error: { status: number; reason: string; details: string[] } }>("/api/call", {
      to: "sip:dc9@192.0.2.66:5060",
      vms: ["router1"],
    });
    expect(call.status).toBe(403);
    expect(call.body.error).toEqual({
      status: 403,
      reason: "Forbidden",
      details: [
        "sip:dc9@192.0.2.66 is not a permitted destination: " +
          "security.destinations is empty, which permits loopback only",
      ],
    });
    expect(await state()).toEqual(before); // the line never dialled
    expect(await stack.whereRuns("router1")).toEqual(["dc1"]);
  });

  test("a destination that does not allow us refuses with 403, and the refusal is kept", async () => {
    const call = await api.post<{ error: { status: number; reason: string; details: string[] } }>("/api/call", {
      to: stack.strict.uri,
      vms: ["router1"],
    });
    expect(call.status).toBe(403);
    expect(call.body.error.status).toBe(403);
    const s = await state();
    expect(s.phase).toBe("ended");
    expect(s.error?.status).toBe(403);
    expect(s.ladder.map((l) => l.label)).toEqual(
      expect.arrayContaining(["INVITE [offer]", expect.stringMatching(/^403 /)]),
    );
    const { dialogs } = (await api.get<{ dialogs: HistoryEntry[] }>("/api/history")).body;
    expect(dialogs).toEqual([expect.objectContaining({ to: stack.strict.uri, outcome: "refused", by: "console" })]);
    expect(await stack.whereRuns("router1")).toEqual(["dc1"]);
  });

  test("Cancel before the answer: CANCEL goes out, the call ends 487 and is kept as cancelled", async () => {
    // sipp plays a destination that only ever says 100 Trying, so the line stays "calling" until we hang up.
    const port = randomPort();
    const destination = runSipp(
      ["-sf", path.join(FIXTURES, "sipp", "uas-cancelled.xml"), "-m", "1", "-i", "127.0.0.1", "-p", String(port)],
      30_000,
    );
    await new Promise((r) => setTimeout(r, 300)); // sipp binds its socket
    const pending = api.post<{ error: { status: number } }>("/api/call", {
      to: `sip:slow@127.0.0.1:${port}`,
      vms: ["router1"],
    });
    await until(
      "the 100 Trying",
      async () => ((await state()).ladder.some((l) => l.label.startsWith("100 ")) ? true : undefined),
      10_000,
    );
    expect((await state()).phase).toBe("calling");
    expect((await api.post("/api/migrate")).status).toBe(409);
    expect((await api.post("/api/cancel")).status).toBe(202);
    expect((await pending).body.error.status).toBe(487);
    expect(await destination).toMatchObject({ code: 0, successful: 1, failed: 0 });
    const s = await state();
    expect(s.phase).toBe("ended");
    expect(s.ladder.map((l) => l.label)).toEqual(
      expect.arrayContaining(["CANCEL", "200 OK (CANCEL)", "487 Request Terminated (INVITE)"]),
    );
  });

  test("Call, Migrate, Bye: armed, progress on the event stream, completed, both reports", async () => {
    const events = eventStream(stack.console.url, TOKEN);
    try {
      const call = await api.post<LineSnapshot>("/api/call", {
        to: stack.dest.uri,
        vms: ["router1"],
        policy: { downtimeLimitMs: 300 },
      });
      expect(call.status).toBe(200);
      expect(call.body).toMatchObject({ phase: "armed", answer: { armed: ["router1"], rejected: [] } });
      expect(call.body.migrationId).toMatch(/^mig-/);

      expect((await api.post("/api/migrate")).status).toBe(202);
      expect((await api.post("/api/migrate")).status).toBe(409);
      const done = await until("the plan to finish", async () => {
        const s = await state();
        return s.phase === "finished" ? s : undefined;
      });
      expect(done.rows).toEqual([expect.objectContaining({ vm: "router1", phase: "completed", progress: 1 })]);
      expect(done.timelines).toEqual([expect.objectContaining({ vm: "router1", state: "completed" })]);
      expect(done.timelines[0].samples.length).toBeGreaterThan(0);

      const bye = await api.post<MigrateSummary>("/api/bye");
      expect(bye.status).toBe(200);
      expect(bye.body.outcome).toBe("completed");
      expect(bye.body.vms).toEqual([
        expect.objectContaining({ vm: "router1", state: "completed", host: stack.dest.uri }),
      ]);
      expect(bye.body.destinationReport?.outcome).toBe("completed");
      expect(await stack.whereRuns("router1")).toEqual(["dc2"]);

      const s = await state();
      expect(s.phase).toBe("ended");
      const labels = s.ladder.map((l) => l.label);
      expect(labels[0]).toBe("INVITE [offer]");
      expect(labels).toEqual(
        expect.arrayContaining(["200 OK (INVITE) [answer]", "ACK", "BYE [report]", "200 OK (BYE) [report]"]),
      );
      expect(labels.some((l) => l.startsWith("INFO [status: router1"))).toBe(true);

      // The stream carried the whole story: every phase, and progress while migrating.
      await until("the last event", () => (events.events.some((e) => e.event === "history") ? true : undefined), 5000);
      const states = events.events.filter((e) => e.event === "state").map((e) => e.data as LineSnapshot);
      const phases = states.map((x) => x.phase).filter((p, i, a) => p !== a[i - 1]);
      expect(phases).toEqual(expect.arrayContaining(["calling", "armed", "migrating", "finished", "closing", "ended"]));
      expect(states.some((x) => x.rows.some((r) => r.phase !== "armed" && r.transferredBytes > 0))).toBe(true);
    } finally {
      events.close();
    }
  });

  test("the history keeps every dialog with its report, after a restart too", async () => {
    const before = (await api.get<{ dialogs: HistoryEntry[] }>("/api/history")).body.dialogs;
    expect(before.map((d) => d.outcome)).toEqual(["completed", "cancelled", "refused"]);
    const restarted = await stack.restartConsole();
    const again = apiClient(restarted.url, TOKEN);
    const after = (await again.get<{ dialogs: HistoryEntry[] }>("/api/history")).body.dialogs;
    expect(after).toEqual(before);
    const record = (await again.get<HistoryRecord>(`/api/history/${after[0].id}`)).body;
    expect(record.summary?.outcome).toBe("completed");
    expect(record.ladder.map((l) => l.label)).toContain("BYE [report]");
    expect(record.timelines[0]).toMatchObject({ vm: "router1", state: "completed" });
  });
});
