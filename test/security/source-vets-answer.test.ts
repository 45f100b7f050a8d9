/**
 * #23 point 6: the source vets the hosts of the destination's answer. A destination (or anyone
 * who can alter its answer) that names a third host as a VM's listener or NBD export would get
 * the VM's memory or whole disk sent there, with a key it chose. The source refuses such an
 * answer (502 "answer refused"), hangs up (BYE) and moves nothing; a permitted host name is
 * resolved once and the migration goes to the vetted address.
 */
import net from "node:net";
import { AnswerHosts, calledAddresses, type Resolver } from "../../lib/access/answer-hosts";
import { DestinationPolicy } from "../../lib/access/destinations";
import { parseConfig } from "../../lib/config/load";
import type { IncomingRequest, ResponseInfo } from "../../lib/sip/backend";
import { nrdlDocument, parseNrdl } from "../../nrdl";
import type { Answer } from "../../nrdl/types";
import { nrdlBody } from "../../agents/source/call";
import { bootOnSource, expectAllOn, guestDefs, refusal, SEQUENTIAL, startPair, type Pair } from "../harness";

jest.setTimeout(120_000);

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
});

describe("a destination that answers with a third host", () => {
  let pair: Pair;
  let third: net.Server;
  let connections = 0;
  const byes: IncomingRequest[] = [];

  beforeAll(async () => {
    // the "third host": another loopback address, which a real destination on 127.0.0.1 is not
    third = net.createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => third.listen(0, "127.0.0.3", () => r()));
    const port = (third.address() as net.AddressInfo).port;
    pair = await startPair(await guestDefs([["router1", "router"]]));
    await bootOnSource(pair);
    // dc2 answers as a hostile destination would: its listener on the third host
    pair.dc2.sip.setHandlers({
      onInvite: (req, res) => {
        const offer = parseNrdl(req.body?.content ?? "");
        if (!offer.ok || offer.doc.body.kind !== "offer") throw new Error("not an offer");
        const armed = offer.doc.body.vms.map((v) => ({
          vm: v.name,
          uri: `tcp:127.0.0.3:${port}`,
          secret: SECRET,
          exports: [],
        }));
        const doc = nrdlDocument(offer.doc.id, { kind: "answer" as const, armed, rejected: [] }, offer.doc.version);
        const { dialog } = res.accept(nrdlBody(doc));
        dialog.onBye((bye, r) => {
          byes.push(bye);
          r.send(200);
        });
      },
    });
  });
  afterAll(async () => {
    await pair?.close();
    third?.close();
  });

  it("refuses the answer (502), sends BYE, connects nowhere, and the VM runs on at the source", async () => {
    const err = await refusal(
      pair.dc1.agent.migrate({ to: pair.dc2.uri, vms: ["router1"], policy: { ...SEQUENTIAL, timeoutS: 10 } }),
    );
    expect(err).toMatchObject({ status: 502, reason: "answer refused" });
    expect(err.details[0]).toMatch(/router1's listener: 127\.0\.0\.3 is neither an address of the destination/);
    const deadline = Date.now() + 5000;
    while (byes.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(byes.map((b) => b.method)).toEqual(["BYE"]);
    expect(connections).toBe(0);
    await expectAllOn(pair, "dc1");
  });
});
