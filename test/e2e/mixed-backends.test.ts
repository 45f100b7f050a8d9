/**
 * Mixed pairs: a sip.js source calling a drachtio destination and the reverse move exp2 end to
 * end, the destination's report arriving in the 200 to BYE either way.
 */
import { bootOnSource, expectAllOn, guestDefs, move, pairPerTest, type BackendKind } from "../harness";
import { describeDrachtio } from "../harness/drachtio";

describeDrachtio("mixed pairs", () =>
  describe.each<[BackendKind, BackendKind]>([
    ["sipjs", "drachtio"],
    ["drachtio", "sipjs"],
  ])("mixed pair: %s source, %s destination", (dc1, dc2) => {
    const start = pairPerTest();

    it("moves exp2 and gets the destination's report in the answer to BYE", async () => {
      const pair = await start(
        await guestDefs([
          ["video", "server"],
          ["router1", "router"],
        ]),
        { backend: { dc1, dc2 } },
      );
      await bootOnSource(pair);
      const summary = await move(pair, { vms: ["video", "router1"] });
      expect(summary.outcome).toBe("completed");
      expect(summary.destinationReport?.outcome).toBe("completed");
      expect(summary.destinationReport?.results.every((r) => r.host === "dc2")).toBe(true);
      await expectAllOn(pair, "dc2");
      expect(pair.dc1.trace.some((e) => e.direction === "sent" && e.message.startsWith("BYE "))).toBe(true);
    });
  }),
);
