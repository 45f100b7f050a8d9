/**
 * The console page in a real browser (Debian's chromium driven by playwright-core, headless,
 * empty profile), through real migrations of the exp2 VMs (router1, video) under QEMU to a
 * destination agent on loopback: the dry run with the compress and dedup picked on the page (applied, or
 * refused with the reason), a refusal shown on the page, an abort, then Call, Migrate
 * (progress moves, both VMs completed), Bye and the report; then Evacuate host moves solo, the VM
 * still running here, to the destination that answers. The finished page is saved as
 * .cache/artifacts/console.png.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { repoRoot } from "../../lib/version";
import { startStack, until, type Stack } from "./stack";

jest.setTimeout(240_000);

const CHROMIUM = "/usr/bin/chromium";
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

let stack: Stack;
let profile: string;
let context: BrowserContext;
let page: Page;

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM))
    throw new Error("chromium is missing: apt-get install -y chromium (scripts/bootstrap.sh installs it)");
  stack = await startStack({ vms: ["router1", "video", "solo"] });
  await Promise.all([stack.boot("router1"), stack.boot("video"), stack.boot("solo")]);
  profile = fs.mkdtempSync(path.join(os.tmpdir(), "st-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1400, height: 1000 },
  });
  page = await context.newPage();
  await page.goto(`${stack.console.url}#token=${stack.console.token}`); // the address the console prints
});

afterAll(async () => {
  await context?.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  await stack?.close();
});

const vmState = (vm: string) => page.locator(`#inventory tr[data-vm="${vm}"] .state`);
const rowPhase = (vm: string) => page.locator(`#progress .vm[data-vm="${vm}"]`);

async function dial(to: string, bandwidthMbps: number): Promise<void> {
  await page.fill("#to", to);
  await page.selectOption("#plan", "");
  for (const vm of ["router1", "video"]) await page.check(`#inventory tr[data-vm="${vm}"] input`);
  await page.fill("#bandwidthMbps", String(bandwidthMbps));
  await page.click("#call");
}

/** The buttons enabled once the page settled (a request in flight keeps them disabled a moment). */
async function enabled(expected: string[]): Promise<void> {
  let last: string[] = [];
  await until(
    "the buttons to settle",
    async () => {
      last = await Promise.all(
        (await page.locator(".buttons button:enabled").all()).map(async (b) => (await b.getAttribute("id")) ?? ""),
      );
      // Dry run asks a question and is open in every phase
      return last.join() === ["dry-run", ...expected].join() ? true : undefined;
    },
    10_000,
  ).catch(() => {
    throw new Error(`expected buttons [${expected.join(", ")}] enabled, got [${last.join(", ")}]`);
  });
}

test("the page shows the inventory and only Call is possible", async () => {
  await page.locator("#line").filter({ hasText: "idle" }).waitFor();
  await vmState("router1").filter({ hasText: "running" }).waitFor();
  await vmState("video").filter({ hasText: "running" }).waitFor();
  expect(await page.locator('#inventory tr[data-vm="router1"] td').nth(2).textContent()).toBe("router");
  await enabled(["call"]);
  const options = await page.locator("#destinations option").all();
  expect(await Promise.all(options.map((o) => o.getAttribute("value")))).toEqual([stack.dest.uri, stack.strict.uri]);
});

test("Dry run shows the destination's verdict and the plan, and the line stays idle", async () => {
  await page.fill("#to", stack.dest.uri);
  for (const vm of ["router1", "video"]) await page.check(`#inventory tr[data-vm="${vm}"] input`);
  await page.fill("#bandwidthMbps", "100");
  await page.click("#dry-run");
  const result = page.locator("#dry-run-result").filter({ hasText: "would accept" });
  await result.waitFor();
  expect(await result.textContent()).toMatch(/wave 1: router1 .*\nwave 2: video/s);
  expect(await page.locator("#line").textContent()).toBe("idle");
  await enabled(["call"]);
});

test("compress and dedup start at the host's defaults, and the dry run applies or refuses what is picked", async () => {
  expect(await page.locator("#compress").inputValue()).toBe("auto");
  expect(await page.locator("#dedup").inputValue()).toBe("auto");
  expect(await page.locator("#compress option").allTextContents()).toEqual(["auto", "none", "zstd", "zlib", "xbzrle"]);
  const result = page.locator("#dry-run-result");
  const dryRun = async (expected: string) => {
    await page.click("#dry-run");
    await result.filter({ hasText: expected }).waitFor();
    return (await result.textContent()) ?? "";
  };
  // the VMs and the 100 Mbit/s cap of the test before: auto offers zstd, which the destination's QEMU takes
  expect(await dryRun("would accept")).toMatch(/router1 .*with zstd/);
  await page.selectOption("#compress", "none");
  expect(await dryRun("would accept")).not.toMatch(/with zstd/);
  await page.selectOption("#dedup", "on");
  expect(await dryRun("400")).toMatch(/dry run: 400 invalid option\ndedup on: it needs a group commit/);
  await page.selectOption("#compress", "auto");
  await page.selectOption("#dedup", "auto");
  expect(await page.locator("#line").textContent()).toBe("idle");
});

test("a refusal is shown with its status and reason, and nothing moves", async () => {
  await dial(stack.strict.uri, 0);
  const refusal = page.locator("#refusal");
  await refusal.waitFor();
  expect(await refusal.textContent()).toMatch(/refused: 403/);
  await page.locator("#line").filter({ hasText: "ended" }).waitFor();
  await enabled(["call"]);
  expect(await page.locator("#ladder svg text").allTextContents()).toEqual(expect.arrayContaining(["INVITE [offer]"]));
  expect(await stack.whereRuns("router1")).toEqual(["dc1"]);
});

test("a destination outside security.destinations is refused by the console itself: 403 with the reason", async () => {
  await dial("sip:dc9@192.0.2.66", 0);
  const message = page.locator("#message").filter({ hasText: "403" });
  await message.waitFor();
  expect(await message.textContent()).toBe(
    "call: 403 Forbidden: sip:dc9@192.0.2.66 is not a permitted destination: " +
      "security.destinations is empty, which permits loopback only",
  );
  await enabled(["call"]);
  expect(await stack.whereRuns("router1")).toEqual(["dc1"]);
});

test("Abort while migrating: the VMs stay where they run, Bye reports it", async () => {
  // 8 Mbit/s: pre-copy of a 96 MiB guest would take over a minute, plenty of time to abort.
  await dial(stack.dest.uri, 8);
  await page.locator("#armed").waitFor();
  await enabled(["migrate", "bye"]);
  await page.click("#migrate");
  await page.locator('#progress .vm[data-vm="router1"][data-phase="active"]').waitFor();
  await enabled(["abort"]);
  await page.click("#abort");
  await page.locator("#line").filter({ hasText: "finished" }).waitFor({ timeout: 30_000 });
  expect(await rowPhase("router1").getAttribute("data-phase")).toBe("aborted");
  await page.click("#bye");
  await page.locator("#summary").waitFor();
  expect(await page.locator("#summary h2").textContent()).toMatch(/failed/);
  expect(await page.locator('#summary tr[data-vm="router1"] td').nth(1).textContent()).toBe("aborted");
  expect(await stack.whereRuns("router1")).toEqual(["dc1"]);
  expect(await stack.whereRuns("video")).toEqual(["dc1"]);
});

test("Call, Migrate, Bye: progress moves, both VMs complete, the report and charts are shown", async () => {
  // 400 Mbit/s: a second or two per VM, long enough to watch the bars move.
  await dial(stack.dest.uri, 400);
  await page.locator("#armed").waitFor();
  expect(await page.locator("#armed").textContent()).toMatch(/router1, video/);
  // Record every percentage the bars show from now on.
  // (page scripts are given as text: this test's TypeScript knows no DOM)
  await page.evaluate(`
    window.seen = [];
    new MutationObserver(() =>
      document.querySelectorAll("#progress .bar span").forEach((s) => window.seen.push(s.textContent)),
    ).observe(document.getElementById("progress"), { childList: true, subtree: true, characterData: true });
  `);
  await page.click("#migrate");
  for (const vm of ["router1", "video"])
    await page.locator(`#progress .vm[data-vm="${vm}"][data-phase="completed"]`).waitFor({ timeout: 90_000 });
  const seen = (await page.evaluate("window.seen")) as string[];
  const between = seen.map((s) => parseInt(s, 10)).filter((p) => p > 0 && p < 100);
  expect(between.length).toBeGreaterThan(0);
  await page.locator("#line").filter({ hasText: "finished" }).waitFor();
  await enabled(["bye"]);

  await page.click("#bye");
  await page.locator("#summary").waitFor();
  expect(await page.locator("#summary h2").textContent()).toMatch(/completed/);
  for (const vm of ["router1", "video"]) {
    expect(await page.locator(`#summary tr[data-vm="${vm}"] td`).nth(1).textContent()).toBe("completed");
    await page.locator(`#timelines svg[data-vm="${vm}"] rect.downtime`).waitFor();
  }
  const ladder = await page.locator("#ladder svg text").allTextContents();
  expect(ladder).toEqual(
    expect.arrayContaining([
      "INVITE [offer]",
      "200 OK (INVITE) [answer]",
      "ACK",
      "BYE [report]",
      "200 OK (BYE) [report]",
    ]),
  );
  expect(ladder.some((l) => l.startsWith("INFO [status:"))).toBe(true);
  await until(
    "history to list the three dialogs",
    async () => ((await page.locator("#history li").count()) === 3 ? true : undefined),
    10_000,
  );
  expect(await page.locator("#history li span").allTextContents()).toEqual(["completed", "failed", "refused"]);
  expect(await stack.whereRuns("router1")).toEqual(["dc2"]);
  expect(await stack.whereRuns("video")).toEqual(["dc2"]);

  const shot = path.join(repoRoot(), ".cache", "artifacts", "console.png");
  fs.mkdirSync(path.dirname(shot), { recursive: true });
  await page.screenshot({ path: shot, fullPage: true });
});

test("Evacuate host moves what still runs here to the destination that takes it, after a confirmation", async () => {
  page.once("dialog", (d) => void d.accept());
  await page.click("#evacuate");
  const result = page.locator("#evacuate-result").filter({ hasText: "evacuation completed" });
  await result.waitFor({ timeout: 60_000 });
  const text = (await result.textContent()) ?? "";
  expect(text).toMatch(new RegExp(`^solo +dc2 ${stack.dest.uri.replace(/[.;]/g, "\\$&")} +moved +\\d+ ms`, "m"));
  expect(text).toMatch(/^router1 +dc1 \(this host\) +not running/m);
  expect(text).toContain("evacuation completed: 1 of 1 running VMs moved off dc1");
  // the strict destination refused to say what it can take (403): it was not used
  expect(await stack.whereRuns("solo")).toEqual(["dc2"]);
  await vmState("solo").filter({ hasText: "absent" }).waitFor();
  expect(await page.locator("#line").textContent()).toBe("ended");
});
