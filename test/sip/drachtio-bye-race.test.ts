/**
 * A BYE right behind the ACK to our 200, on the drachtio backend: it must reach the agent's BYE
 * handler (the report in its 200, the dialog ended), never srf's bare 200. Source and destination
 * run in one process here, as in the e2e suites; the destination reads its drachtio-server's
 * socket late (a loaded machine), so the source has taken its side of the same Call-ID before the
 * destination hears that its 200 went out, then the ACK and the BYE, all in one read.
 * (When srf.ts kept those waiting requests by Call-ID, the source's adoption took them away and
 * srf's own Dialog.handle answered the BYE bare.)
 */
import type { Socket } from "node:net";
import { DrachtioBackend } from "../../lib/sip/drachtio-backend";
import { startDrachtioServer, type DrachtioServer } from "../../lib/sip/drachtio/server-process";
import { describeDrachtio } from "../harness/drachtio";

jest.setTimeout(30_000);

const NRDL = { contentType: "application/nrdl+xml", content: "<nrdl/>" };

/** The backend's connection to its drachtio-server (srf's agent keeps it as the key of mapServer). */
function adminSocket(b: DrachtioBackend): Socket {
  const srf = (b as unknown as { srf: { _app: { client: { mapServer: Map<Socket, unknown> } } } }).srf;
  const [socket] = srf._app.client.mapServer.keys();
  return socket;
}

describeDrachtio("a BYE right behind the ACK (drachtio)", () => {
  let s1: DrachtioServer;
  let s2: DrachtioServer;
  let uac: DrachtioBackend;
  let uas: DrachtioBackend;

  beforeAll(async () => {
    [s1, s2] = await Promise.all([startDrachtioServer(), startDrachtioServer()]);
    const drachtio = (s: DrachtioServer) => ({ host: s.address, port: s.adminPort, secret: s.secret });
    uac = new DrachtioBackend({ aor: "sip:dc1@127.0.0.1", listen: [], drachtio: drachtio(s1) });
    uas = new DrachtioBackend({ aor: "sip:dc2@127.0.0.1", listen: [], drachtio: drachtio(s2) });
    await Promise.all([uac.start(), uas.start()]);
  });
  afterAll(async () => {
    await Promise.all([uac?.stop(), uas?.stop()]);
    await Promise.all([s1?.stop(), s2?.stop()]);
  });

  const target = () => `sip:dc2@127.0.0.1:${s2.sipPort};transport=udp`;

  test.each(Array.from({ length: Number(process.env.ROUNDS ?? 3) }, (_, i) => i))(
    "reaches the agent's BYE handler, whose report is the answer (round %i)",
    async () => {
      const socket = adminSocket(uas);
      let ended: string | undefined;
      uas.setHandlers({
        onInvite(_req, res) {
          const { dialog } = res.accept({ contentType: NRDL.contentType, content: "<answer/>" });
          // the agent answers after a while (it disarms first)
          dialog.onBye((_bye, reply) =>
            setTimeout(() => reply.send(200, undefined, { body: { ...NRDL, content: "<report/>" } }), 20),
          );
          dialog.onTerminated((why) => (ended = why));
          socket.pause(); // the 200 still goes out; what the server tells us next waits
        },
      });
      try {
        const { dialog } = await uac.invite(target(), NRDL).established; // ACKed
        const bye = dialog.bye();
        await new Promise((r) => setTimeout(r, 200)); // the ACK and the BYE are at dc2's server
        socket.resume();
        const answer = await bye;
        expect([answer.status, answer.body?.content]).toEqual([200, "<report/>"]);
        expect(ended).toBe("BYE received");
      } finally {
        socket.resume();
      }
    },
  );
});
