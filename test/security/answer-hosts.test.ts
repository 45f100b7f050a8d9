/**
 * #23 point 6, the rules behind test/security/source-vets-answer.test.ts: which hosts of a
 * destination's answer the source accepts, how a permitted name is pinned to its address, and
 * security.destinations' migrationNetworks.
 */
import net from "node:net";
import { AnswerHosts, calledAddresses, type Resolver } from "../../lib/access/answer-hosts";
import { DestinationPolicy } from "../../lib/access/destinations";
import { configWarnings } from "../../agents/commands/config";
import { parseConfig } from "../../lib/config/load";
import type { ResponseInfo } from "../../lib/sip/backend";
import type { Answer } from "../../nrdl/types";
import { refusal } from "../harness";

const SECRET = "answer-secret-0123456789";
const names: Record<string, string[]> = { "dc2.example": ["10.0.0.2"], "evil.example": ["192.0.2.66"] };
const resolver: Resolver = async (host) => {
  if (net.isIP(host)) return [host];
  const found = names[host];
  if (!found) throw new Error(`${host}: no such name`);
  return found;
};
const answerOf = (uri: string, exports: string[] = []): Answer => ({
  kind: "answer",
  armed: [
    { vm: "vm1", uri, secret: SECRET, exports: exports.map((e, i) => ({ disk: `vd${i}`, uri: e, secret: SECRET })) },
  ],
  rejected: [],
});

describe("the answer's hosts", () => {
  const hosts = (networks: string[] = []) => new AnswerHosts({ called: ["10.0.0.2"], networks }, resolver);

  it("keeps listeners and exports on the called destination's address", async () => {
    const a = await hosts().pinAnswer(answerOf("tcp:10.0.0.2:4444", ["nbd://10.0.0.2:10809/vda"]));
    expect(a.armed[0].uri).toBe("tcp:10.0.0.2:4444");
    expect(a.armed[0].exports[0].uri).toBe("nbd://10.0.0.2:10809/vda");
  });

  it("refuses a third host as listener or as NBD export, naming it", async () => {
    const listener = await refusal(hosts().pinAnswer(answerOf("tcp:192.0.2.66:4444")));
    expect(listener).toMatchObject({ status: 502, reason: "answer refused" });
    expect(listener.details[0]).toMatch(/vm1's listener: 192\.0\.2\.66 is neither an address of the destination/);
    const disk = await refusal(hosts().pinAnswer(answerOf("tcp:10.0.0.2:4444", ["nbd://192.0.2.66:10809/vda"])));
    expect(disk.details[0]).toMatch(/vm1's disk vd0: 192\.0\.2\.66 is neither/);
    const named = await refusal(hosts().pinAnswer(answerOf("tcp:evil.example:4444")));
    expect(named.details[0]).toMatch(/evil\.example \(192\.0\.2\.66\) is neither/);
    const unresolvable = await refusal(hosts().pinAnswer(answerOf("tcp:nowhere.example:4444")));
    expect(unresolvable.details[0]).toMatch(/cannot resolve nowhere\.example/);
  });

  it("pins a permitted host name to the address it was vetted as", async () => {
    const a = await hosts().pinAnswer(answerOf("tcp:dc2.example:4444", ["nbd://dc2.example:10809/vda"]));
    expect(a.armed[0].uri).toBe("tcp:10.0.0.2:4444");
    expect(a.armed[0].exports[0].uri).toBe("nbd://10.0.0.2:10809/vda");
  });

  it("admits the destination's configured migration network, and IPv6 in brackets", async () => {
    const h = hosts(["192.0.2.0/24", "2001:db8::/32"]);
    expect((await h.pinAnswer(answerOf("tcp:192.0.2.66:4444"))).armed[0].uri).toBe("tcp:192.0.2.66:4444");
    expect(await h.pin("nbd://[2001:db8::7]:10809/vda", "disk")).toBe("nbd://[2001:db8::7]:10809/vda");
    await expect(h.pin("tcp:198.51.100.1:4444", "listener")).rejects.toMatchObject({ status: 502 });
  });

  it("takes the called addresses from the 200's source and the answering URI's host", async () => {
    const res: ResponseInfo = {
      status: 200,
      reason: "OK",
      header: () => undefined,
      source: { address: "::ffff:10.9.9.9", port: 5060, transport: "udp" },
    };
    expect(await calledAddresses("sip:dc2@dc2.example:5070;transport=tcp", res, resolver)).toEqual([
      "10.9.9.9",
      "10.0.0.2",
    ]);
  });

  it("reads migrationNetworks from security.destinations entries; plain strings still work", () => {
    const cfg = parseConfig({
      security: {
        destinations: ["sip:dc3@*", { uri: "sip:dc2@*", migrationNetworks: ["10.20.0.0/16", "2001:db8::/48"] }],
      },
    });
    const policy = new DestinationPolicy(cfg.security.destinations);
    expect(policy.check("sip:dc2@10.0.0.2")).toBeUndefined();
    expect(policy.check("sip:dc3@10.0.0.3")).toBeUndefined();
    expect(policy.migrationNetworks("sip:dc2@10.0.0.2:5060")).toEqual(["10.20.0.0/16", "2001:db8::/48"]);
    expect(policy.migrationNetworks("sip:dc3@10.0.0.3")).toEqual([]);
    expect(() =>
      parseConfig({ security: { destinations: [{ uri: "sip:dc2@*", migrationNetworks: ["10.20.0.0/40"] }] } }),
    ).toThrow(/expected an address or CIDR/);
  });

  it("config check names every destination whose migrationNetworks widen where VMs may go", () => {
    const cfg = parseConfig({
      security: { destinations: ["sip:dc3@*", { uri: "sip:dc2@*", migrationNetworks: ["10.20.0.0/16"] }] },
    });
    expect(configWarnings(cfg).filter((w) => w.includes("migrationNetworks"))).toEqual([
      "security.destinations: sip:dc2@* may put its listeners and NBD exports in 10.20.0.0/16 besides " +
        "the address it is called on (migrationNetworks)",
    ]);
  });
});
