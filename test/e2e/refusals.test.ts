/**
 * Every refusal of the destination agent, over real SIP with real QEMU behind it: the status
 * and reason the caller sees, and that nothing was armed or left behind on the destination.
 */
import { buildNrdl, offerDocument, parseNrdl } from "../../nrdl";
import { TeleportError } from "../../lib/errors";
import { NRDL_MIME } from "../../nrdl/types";
import {
  bootOnSource,
  expectAllOn,
  guestDefs,
  placement,
  refusal,
  startPair,
  type Pair,
  SEQUENTIAL,
  extraSource,
} from "../harness";

function offerFor(vms: Array<{ name: string; memoryMib?: number }>, id = "mig-test"): string {
  return buildNrdl(
    offerDocument({
      id,
      sourceUri: "sip:dc1@127.0.0.1",
      destinationUri: "sip:dc2@127.0.0.1",
      vms: vms.map((v) => ({ memoryMib: 96, ...v })),
    }),
  );
}

/** Nothing of the destination's: no QEMU process there for any VM. */
function nothingOnDc2(pair: Pair): void {
  for (const [vm, hosts] of Object.entries(placement(pair))) expect([vm, hosts.includes("dc2")]).toEqual([vm, false]);
}

describe("destination refusals", () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await startPair(
      await guestDefs([
        ["router1", "router"],
        ["video", "server"],
      ]),
    );
  });
  afterAll(async () => pair?.close());
  afterEach(() => nothingOnDc2(pair));

  it("415 for a softphone's SDP, with Accept: application/nrdl+xml", async () => {
    const e = await refusal(
      pair.dc1.sip.invite(pair.dc2.uri, {
        contentType: "application/sdp",
        content: "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n",
      }).established,
    );
    expect(e.status).toBe(415);
    // what a softphone's user reads: the reason phrase, and the Warning's whole sentence
    expect(e.reason).toContain("415 No Calls Here - Send a MESSAGE: migrate PLAN to URI");
    expect(e.details.join(" ")).toContain("to migrate VMs send a text MESSAGE such as 'migrate exp2 to sip:dc2@");
  });

  it("400 for invalid NRDL, with the validator's message", async () => {
    const bad = offerFor([{ name: "router1" }]).replace('memory-mib="96"', 'memory-mib="-5"');
    const e = await refusal(pair.dc1.sip.invite(pair.dc2.uri, { contentType: NRDL_MIME, content: bad }).established);
    expect(e.status).toBe(400);
    expect(e.message).toMatch(/\/nrdl\/offer\/vm\[1\]\/@memory-mib: expected a positive integer, got .-5./);
  });

  it("488 with a <rejected> per VM this host does not define or defines differently", async () => {
    const content = offerFor([{ name: "router1" }, { name: "ghost" }, { name: "video", memoryMib: 512 }]);
    const e = await refusal(pair.dc1.sip.invite(pair.dc2.uri, { contentType: NRDL_MIME, content }).established);
    expect(e.status).toBe(488);
    expect(e.message).toMatch(/ghost: not defined on this host/);
    expect(e.message).toMatch(/video: definition differs: memory 512 MiB offered, 96 MiB defined here/);
    expect(e.message).not.toMatch(/router1/);
  });

  it("486 Busy Here for one of two dialogs racing for the same VM; the other proceeds", async () => {
    const one = pair.dc1.sip.invite(pair.dc2.uri, {
      contentType: NRDL_MIME,
      content: offerFor([{ name: "router1" }], "mig-one"),
    });
    const two = pair.dc1.sip.invite(pair.dc2.uri, {
      contentType: NRDL_MIME,
      content: offerFor([{ name: "router1" }], "mig-two"),
    });
    const [a, b] = await Promise.allSettled([one.established, two.established]);
    const won = [a, b].filter((r) => r.status === "fulfilled");
    const lost = [a, b]
      .filter((r): r is PromiseRejectedResult => r.status === "rejected")
      .map((r) => TeleportError.from(r.reason));
    expect(won).toHaveLength(1);
    expect(lost.map((e) => e.status)).toEqual([486]);
    expect(lost[0].message).toMatch(/router1 is being moved by another dialog/);
    const { dialog } = (won[0] as PromiseFulfilledResult<Awaited<typeof one.established>>).value;
    expect(placement(pair).router1).toEqual(["dc2"]); // armed, waiting
    const bye = await dialog.bye();
    expect(bye.status).toBe(200);
    const report = parseNrdl(bye.body?.content ?? "");
    expect(report.ok && report.doc.body.kind === "report" && report.doc.body.outcome).toBe("failed");
  });

  it("CANCEL while arming: 487, and every listener armed meanwhile is removed", async () => {
    // arming takes less than a SIP round trip may: hold it from its start until the source has its 487
    const driver = pair.dc2.host.find("router1")!.driver;
    const arm = driver.arm.bind(driver);
    let entered!: () => void;
    let release!: () => void;
    const arming = new Promise<void>((r) => (entered = r));
    const held = new Promise<void>((r) => (release = r));
    const calls: Array<Promise<unknown>> = [];
    driver.arm = (vm, o) => {
      entered();
      const call = held.then(() => arm(vm, o));
      calls.push(call);
      return call;
    };
    try {
      const invite = pair.dc1.sip.invite(pair.dc2.uri, {
        contentType: NRDL_MIME,
        content: offerFor([{ name: "router1" }, { name: "video" }]),
      });
      await arming;
      invite.cancel();
      const e = await refusal(invite.established);
      expect(e.status).toBe(487);
    } finally {
      release();
      driver.arm = arm;
    }
    // arming finishes in the background, then disarms
    await Promise.allSettled(calls);
    for (let i = 0; i < 100 && Object.values(placement(pair)).some((h) => h.includes("dc2")); i++)
      await new Promise((r) => setTimeout(r, 100));
  });

  it("a source refuses to offer a VM that does not run on it", async () => {
    const e = await refusal(pair.dc1.agent.migrate({ to: pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL }));
    expect(e.status).toBe(409);
    expect(e.message).toMatch(/router1 is absent here, not running/);
  });
});

/** A second source agent on dc1 that answers digest challenges as user dc1. */
const sourceWith = (pair: Pair, password: string) => extraSource(pair, { credentials: { username: "dc1", password } });

describe("who may call", () => {
  let pair: Pair;
  afterEach(async () => pair?.close());

  it("403 for a caller outside the allowlist", async () => {
    pair = await startPair(await guestDefs([["router1", "router"]]), {
      dc2: { security: { allow: ["192.0.2.0/24"] } },
    });
    await bootOnSource(pair);
    const e = await refusal(pair.dc1.agent.migrate({ to: pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL }));
    expect(e.status).toBe(403);
    expect(e.message).toMatch(/no proven identity from 127\.0\.0\.1 \(From sip:dc1@127\.0\.0\.1 proves nothing/);
    await expectAllOn(pair, "dc1");
  });

  it(
    "401 without or with wrong credentials when the " + "destination requires digest; the right ones move the VM",
    async () => {
      pair = await startPair(await guestDefs([["router1", "router"]]), {
        dc2: { security: { users: { dc1: "s3cret-dc1" } } },
      });
      await bootOnSource(pair);
      const e = await refusal(pair.dc1.agent.migrate({ to: pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL }));
      expect(e.status).toBe(401);
      await expectAllOn(pair, "dc1");
      const wrong = await sourceWith(pair, "wrong-password");
      expect(
        (await refusal(wrong.agent.migrate({ to: pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL }))).status,
      ).toBe(401);
      await wrong.stop();
      await expectAllOn(pair, "dc1");
      const right = await sourceWith(pair, "s3cret-dc1");
      const summary = await right.agent.migrate({ to: pair.dc2.uri, vms: ["router1"], policy: SEQUENTIAL });
      await right.stop();
      expect(summary.outcome).toBe("completed");
      await expectAllOn(pair, "dc2");
    },
  );
});
