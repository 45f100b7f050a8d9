/**
 * Names that arrive from the network never reach what every JavaScript object inherits: each
 * name on Object.prototype (and `__proto__`) as a digest user, a VM, a plan and an NRDL element
 * or entity is refused like any unknown name. The first case is the exploit that voided digest:
 * user `constructor` with the text of Object as its password was admitted.
 */
import { namedPlan } from "../../agents/console/plans";
import { parseConfig } from "../../lib/config/load";
import { DigestServer, parseDigestHeader } from "../../lib/sip/digest";
import { parseNrdl } from "../../nrdl";
import { guestDefs, pairPerTest } from "../harness";
import { RawSipClient, digestAnswer, rawInvite, rawOffer, sha256Challenge } from "./raw-sip";

/** Every inherited name, and the text a forger would give as its "password" (what String() of it prints). */
const INHERITED: Array<[string, string]> = [...Object.getOwnPropertyNames(Object.prototype), "__proto__"].map(
  (name) => [name, String((Object.prototype as unknown as Record<string, unknown>)[name])],
);

const offer = rawOffer;

test("the digest server knows only its own users", () => {
  const server = new DigestServer({ realm: "r", users: { dc1: "pw" } });
  const challenge = server.challenges()[0];
  for (const [name, password] of INHERITED) {
    const verdict = server.verify(digestAnswer(challenge, name, password, "INVITE", "sip:a"), "INVITE");
    expect({ name, verdict }).toMatchObject({ name, verdict: { ok: false, reason: "wrong user name or password" } });
  }
  // a parameter named like an inherited property is a plain entry of the parsed header
  const parsed = parseDigestHeader('Digest __proto__="x", constructor="y", realm="r"');
  expect(Object.getPrototypeOf(parsed)).toBeNull();
  expect([parsed.__proto__, parsed.constructor, parsed.realm]).toEqual(["x", "y", "r"]);
});

describe("over SIP", () => {
  const start = pairPerTest();

  it("a digest user named after an inherited property is refused 401, with the wrong-password reason", async () => {
    const pair = await start(await guestDefs([["router1", "router"]]), {
      dc2: { security: { users: { dc1: "pw-dc1" }, allow: ["127.0.0.1"] } },
    });
    const port = pair.dc2.sip.listeners[0].port;
    const target = `sip:dc2@127.0.0.1:${port}`;
    const raw = await RawSipClient.udp(port);
    try {
      const first = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("router1"));
      raw.send(first.text);
      const challenge = sha256Challenge(await raw.final(first.callId));
      const statuses: Array<[string, number | undefined, string | undefined]> = [];
      for (const [i, [name, password]] of INHERITED.entries()) {
        const nc = (i + 1).toString(16).padStart(8, "0");
        const auth = `Authorization: ${digestAnswer(challenge, name, password, "INVITE", target, nc)}`;
        const inv = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("router1"), [auth]);
        raw.send(inv.text);
        const r = await raw.final(inv.callId);
        statuses.push([name, r?.status, r?.header("warning")[0]]);
      }
      for (const [name, status, warning] of statuses) {
        expect({ name, status }).toEqual({ name, status: 401 });
        expect(warning).toMatch(/wrong user name or password/);
      }
      // an unknown user and a wrong password read the same (no user enumeration)
      const wrong = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer("router1"), [
        `Authorization: ${digestAnswer(challenge, "dc1", "not-it", "INVITE", target, "000000ff")}`,
      ]);
      raw.send(wrong.text);
      expect((await raw.final(wrong.callId))?.header("warning")[0]).toBe(statuses[0][2]);
      expect(pair.dc2.host.find("router1")).toBeDefined();
    } finally {
      raw.close();
    }
  });

  it("a VM named after an inherited property is unknown to the inventory (488), nothing is armed", async () => {
    const pair = await start(await guestDefs([["router1", "router"]]), { dc2: { security: { allow: ["127.0.0.1"] } } });
    const port = pair.dc2.sip.listeners[0].port;
    const target = `sip:dc2@127.0.0.1:${port}`;
    const raw = await RawSipClient.udp(port);
    try {
      // the rest (__proto__, __defineGetter__, ...) NRDL's name grammar refuses already
      const named = INHERITED.filter(([n]) => /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(n));
      expect(named.length).toBeGreaterThan(5);
      for (const [name] of named) {
        const inv = rawInvite(target, "sip:dc1@127.0.0.1", raw.localPort, offer(name));
        raw.send(inv.text);
        const r = await raw.final(inv.callId);
        expect({ name, status: r?.status }).toEqual({ name, status: 488 });
      }
    } finally {
      raw.close();
    }
  });
});

test("a plan named after an inherited property is no plan (404)", () => {
  const cfg = parseConfig({
    host: "dc1",
    console: { plans: { mine: { vms: ["router1"] } } },
  });
  const host = { find: () => undefined } as unknown as Parameters<typeof namedPlan>[1];
  for (const [name] of INHERITED)
    expect({ name, thrown: catching(() => namedPlan(cfg, host, name, "sip:dc2@127.0.0.1")) }).toEqual({
      name,
      thrown: 404,
    });
  expect(namedPlan(cfg, host, "mine", "sip:dc2@127.0.0.1")).toMatchObject({ vms: ["router1"] });
});

test("NRDL: an inherited name as element or entity is unknown, never a version or a character", () => {
  for (const [name] of INHERITED.filter(([n]) => /^[A-Za-z_][\w.-]*$/.test(n))) {
    const withElement = offer("router1").replace("</nrdl>", `<${name}/></nrdl>`);
    const r = parseNrdl(withElement);
    expect(r.ok).toBe(false);
    // fast-xml-parser refuses some such names itself; either way the document is refused for that element
    if (!r.ok) expect(r.violations.map((v) => v.message).join("\n")).toMatch(/unexpected element|reserved/);
  }
  const entities = INHERITED.filter(([n]) => n.length <= 10); // longer references are refused as unterminated
  expect(entities.map(([n]) => n)).toEqual(expect.arrayContaining(["toString", "valueOf", "__proto__"]));
  for (const [name] of entities) {
    const withEntity = offer("router1").replace('name="router1"', `name="router&${name};"`);
    const e = parseNrdl(withEntity);
    expect(e.ok).toBe(false);
    if (!e.ok) expect(e.violations.map((v) => v.message).join("\n")).toMatch(/undefined entity/);
  }
});

function catching(f: () => unknown): number | undefined {
  try {
    f();
    return undefined;
  } catch (err) {
    return (err as { status?: number }).status;
  }
}
