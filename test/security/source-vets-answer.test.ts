/**
 * #23 point 6: the source vets the hosts of the destination's answer. A destination (or anyone
 * who can alter its answer) that names a third host as a VM's listener or NBD export would get
 * the VM's memory or whole disk sent there, with a key it chose. The source refuses such an
 * answer (502 "answer refused"), hangs up (BYE) and moves nothing. The rules themselves:
 * answer-hosts.test.ts.
 */
import net from "node:net";
import { nrdlDocument, parseNrdl } from "../../nrdl";
import { nrdlBody } from "../../agents/source/call";
import { bootOnSource, expectAllOn, guestDefs, refusal, SEQUENTIAL, startPair, type Pair } from "../harness";

jest.setTimeout(120_000);

const SECRET = "answer-secret-0123456789";

describe("a destination that answers with a third host", () => {
  let pair: Pair;
  let third: net.Server;
  let connections = 0;

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
        res.accept(nrdlBody(doc));
      },
    });
  });
  afterAll(async () => {
    await pair?.close();
    third?.close();
  });

  it("refuses the answer (502), sends BYE, connects nowhere, and the VM runs on at the source", async () => {
    const moved = pair.dc1.agent.migrate({
      to: pair.dc2.uri,
      vms: ["router1"],
      policy: { ...SEQUENTIAL, timeoutS: 10 },
    });
    const err = await refusal(moved).catch((e: unknown) => e as Error);
    expect(connections).toBe(0); // nothing of the VM went to the third host
    expect(err).toMatchObject({ status: 502, reason: "answer refused" });
    const details = (err as { details?: string[] }).details ?? [];
    expect(details[0]).toMatch(/router1's listener: 127\.0\.0\.3 is neither an address of the destination/);
    // the source hung up: the BYE reached dc2 (its wire, not its handler: srf answers a BYE that beats its dialog)
    const hungUp = () => pair.dc2.trace.some((e) => e.direction === "received" && e.message.startsWith("BYE "));
    const deadline = Date.now() + 10_000;
    while (!hungUp() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(hungUp()).toBe(true);
    await expectAllOn(pair, "dc1");
  });
});
