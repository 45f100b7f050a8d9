/**
 * In-dialog requests must prove what admitted their dialog. A dialog opened with a client
 * certificate takes INFO and BYE only over TLS with a certificate naming the same URI; one opened
 * on a trusted proxy's P-Asserted-Identity only from a trusted proxy asserting the same identity,
 * or from the proxy that record-routed it. A forger who knows the dialog's Call-ID and tags (read
 * off the wire) gets 403 and changes nothing: the listener stays armed and the caller's own BYE
 * still ends the dialog. Raw requests, written by hand, play the caller, the proxy and the forger.
 */
import fs from "node:fs";
import { buildNrdl } from "../../nrdl";
import { NRDL_MIME } from "../../nrdl/types";
import { guestDefs, pairPerTest, placement, runnableBackends, type Pair } from "../harness";
import { tempDir } from "../sip/helpers";
import { makeCa } from "./certs";
import { RawSipClient, rawInDialog, rawInvite, type RawInvite, type RawResponse, rawOffer } from "./raw-sip";

const offer = rawOffer;

/** An INFO body the destination accepts (an NRDL status), so only the identity decides. */
const status = (vm: string) => ({
  type: NRDL_MIME,
  content: buildNrdl({
    version: 1,
    id: "mig-status",
    body: { kind: "status", statuses: [{ vm, state: "migrating" }] },
  }),
});

async function waitFor(ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error("condition not reached in time");
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Sends one in-dialog request from `client` and waits for its final answer. */
async function inDialog(
  client: RawSipClient,
  dialog: { invite: RawInvite; ok: RawResponse | undefined; transport: string },
  method: string,
  cseq: number,
  extra: string[] = [],
): Promise<RawResponse | undefined> {
  const body = method === "INFO" ? status("router1") : undefined;
  const infoHeaders =
    method === "INFO" ? ["Info-Package: sip-teleport-status", "Content-Disposition: Info-Package"] : [];
  client.send(
    rawInDialog(dialog.invite, dialog.ok, method, cseq, {
      localPort: client.localPort,
      transport: dialog.transport,
      extra: [...infoHeaders, ...extra],
      body,
    }),
  );
  return client.final(dialog.invite.callId, 3000, `${cseq} ${method}`);
}

describe("in-dialog requests prove the INVITE's identity", () => {
  const start = pairPerTest();

  describe("a dialog opened with a client certificate", () => {
    const dir = tempDir("in-dialog-tls");
    const ca = makeCa(dir, "in-dialog");
    afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

    it("refuses INFO and BYE without the same certificate identity (403), the caller's BYE ends it", async () => {
      const pair: Pair = await start(await guestDefs([["router1", "router"]]), {
        transport: "tls",
        backend: "sipjs", // drachtio-server passes no client certificate to its apps (lib/sip/README.md)
        dc1: { sip: { tls: { ...ca.issue("dc1-agent", "IP:127.0.0.1"), ca: ca.ca } } },
        dc2: {
          sip: { tls: { ...ca.issue("dc2", "IP:127.0.0.1"), ca: ca.ca, clientCa: ca.ca } },
          // no address entry: only a certificate naming dc1 admits
          security: { allow: ["sip:dc1@dc1.example"] },
        },
      });
      const port = pair.dc2.sip.listeners[0].port;
      const target = `sip:dc2@127.0.0.1:${port};transport=tls`;
      const caller = await RawSipClient.tls(port, {
        ca: ca.ca,
        ...ca.issue("dc1", "IP:127.0.0.1,URI:sip:dc1@dc1.example"),
      });
      const mallory = await RawSipClient.tls(port, {
        ca: ca.ca,
        ...ca.issue("mallory", "IP:127.0.0.1,URI:sip:mallory@dc1.example"),
      });
      const anonymous = await RawSipClient.tls(port, { ca: ca.ca });
      try {
        const invite = rawInvite(
          target,
          "sip:dc1@dc1.example",
          caller.localPort,
          offer("router1", "sip:dc1@dc1.example"),
          [],
          "TLS",
        );
        caller.send(invite.text);
        const ok = await caller.final(invite.callId, 15000);
        expect(ok?.status).toBe(200);
        const dialog = { invite, ok, transport: "TLS" };
        caller.send(rawInDialog(invite, ok, "ACK", 1, { localPort: caller.localPort, transport: "TLS" }));
        expect(placement(pair).router1).toEqual(["dc2"]);

        const forged = await inDialog(mallory, dialog, "BYE", 2);
        expect(forged?.status).toBe(403);
        expect(forged?.header("warning")[0]).toMatch(
          new RegExp(
            "BYE from 127\\.0\\.0\\.1 over TLS proves sip:mallory@dc1\\.example \\(certificate\\), " +
              "but sip:dc1@dc1\\.example \\(certificate\\) opened this dialog",
          ),
        );
        const noCert = await inDialog(anonymous, dialog, "INFO", 3);
        expect(noCert?.status).toBe(403);
        expect(noCert?.header("warning")[0]).toMatch(/INFO from 127\.0\.0\.1 over TLS proves no identity/);
        expect(placement(pair).router1).toEqual(["dc2"]); // still armed

        expect((await inDialog(caller, dialog, "INFO", 4))?.status).toBe(200);
        expect((await inDialog(caller, dialog, "BYE", 5))?.status).toBe(200);
        expect(placement(pair).router1).toEqual([]);
      } finally {
        for (const c of [caller, mallory, anonymous]) c.close();
      }
    });
  });

  /**
   * On drachtio the forgeries are INFOs: drachtio-server drops a dialog the moment any BYE arrives,
   * whatever the agent answers, so a forged BYE is refused (403) yet ends the dialog there; the agent
   * then disarms and the VM stays where it was (lib/sip/README.md). The last step shows exactly that.
   */
  const backends = runnableBackends(["sipjs", "drachtio"] as const, "a dialog opened on a trusted proxy's assertion");
  describe.each(backends)("a dialog opened on a trusted proxy's assertion (%s)", (backend) => {
    const PROXY = "127.0.0.2";
    const STRANGER = "127.0.0.3";
    const DC1 = "sip:dc1@ops.example";
    const forgery = backend === "sipjs" ? "BYE" : "INFO";

    it("takes INFO and BYE from the proxy (same identity, or relayed unasserted), refuses others (403)", async () => {
      const pair = await start(await guestDefs([["router1", "router"]]), {
        backend,
        dc2: { security: { allow: [DC1] }, limits: { trustedProxies: [PROXY] } },
      });
      const port = pair.dc2.sip.listeners[0].port;
      const target = `sip:dc2@127.0.0.1:${port}`;
      const proxy = await RawSipClient.udp(port, "127.0.0.1", PROXY);
      const stranger = await RawSipClient.udp(port, "127.0.0.1", STRANGER);
      const asserted = (uri: string) => [`P-Asserted-Identity: <${uri}>`];
      try {
        // without a Record-Route its INFO and BYE would come from the caller itself: refused up front
        const direct = rawInvite(target, DC1, proxy.localPort, offer("router1", DC1), asserted(DC1));
        proxy.send(direct.text);
        const refused = await proxy.final(direct.callId);
        expect(refused?.status).toBe(403);
        expect(refused?.header("warning")[0]).toMatch(/the proxy did not Record-Route the INVITE/);
        expect(placement(pair).router1).toEqual([]);

        const invite = rawInvite(target, DC1, proxy.localPort, offer("router1", DC1), [
          ...asserted(DC1),
          `Record-Route: <sip:${PROXY}:${proxy.localPort};lr>`,
        ]);
        proxy.send(invite.text);
        const ok = await proxy.final(invite.callId, 15000);
        expect(ok?.status).toBe(200);
        const dialog = { invite, ok, transport: "UDP" };
        proxy.send(rawInDialog(invite, ok, "ACK", 1, { localPort: proxy.localPort }));

        // the stranger copies the proxy's header: it proves nothing from there
        const forged = await inDialog(stranger, dialog, forgery, 2, asserted(DC1));
        expect(forged?.status).toBe(403);
        expect(forged?.header("warning")[0]).toMatch(
          new RegExp(
            `${forgery} from 127\\.0\\.0\\.3 over UDP proves no identity, but sip:dc1@ops\\.example \\(proxy\\) opened`,
          ),
        );
        // the proxy asserting someone else: not the dialog's caller
        const other = await inDialog(proxy, dialog, "INFO", 3, asserted("sip:mallory@ops.example"));
        expect(other?.status).toBe(403);
        expect(other?.header("warning")[0]).toMatch(/proves sip:mallory@ops\.example \(proxy\)/);
        expect(placement(pair).router1).toEqual(["dc2"]);

        // relayed along the Record-Route without an assertion (as Kamailio relays in-dialog requests)
        expect((await inDialog(proxy, dialog, "INFO", 4))?.status).toBe(200);
        if (backend === "drachtio") {
          // drachtio's limit: the forged BYE is refused, but the server has dropped the dialog
          expect((await inDialog(stranger, dialog, "BYE", 5, asserted(DC1)))?.status).toBe(403);
          await waitFor(() => placement(pair).router1.length === 0);
          return;
        }
        expect((await inDialog(proxy, dialog, "BYE", 5, asserted(DC1)))?.status).toBe(200);
        expect(placement(pair).router1).toEqual([]);
      } finally {
        proxy.close();
        stranger.close();
      }
    });
  });
});
