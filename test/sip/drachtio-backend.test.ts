/**
 * The drachtio backend against real drachtio-servers (one per agent): the NRDL INVITE, INFO
 * both ways, BYE whose 200 carries the destination's report, CANCEL, OPTIONS, SHA-256 digest,
 * trace masking, and a server restart ending the dialogs in flight.
 */
import { DrachtioBackend } from "../../lib/sip/drachtio-backend";
import { startDrachtioServer, type DrachtioServer } from "../../lib/sip/drachtio/server-process";
import { DigestServer } from "../../lib/sip/digest";
import { TeleportError } from "../../lib/errors";
import type { TraceEvent } from "../../lib/sip";
import { describeDrachtio } from "../harness/drachtio";

jest.setTimeout(30_000);

const NRDL = { contentType: "application/nrdl+xml", content: "<nrdl/>" };

describeDrachtio("DrachtioBackend on drachtio-server", () => {
  let s1: DrachtioServer;
  let s2: DrachtioServer;
  let uac: DrachtioBackend;
  let uas: DrachtioBackend;
  const uacTrace: TraceEvent[] = [];

  beforeAll(async () => {
    [s1, s2] = await Promise.all([startDrachtioServer(), startDrachtioServer()]);
    uac = new DrachtioBackend({
      aor: "sip:dc1@127.0.0.1",
      listen: [],
      credentials: { username: "dc1", password: "s3cret-pw" },
      drachtio: { host: s1.address, port: s1.adminPort, secret: s1.secret },
    });
    uas = new DrachtioBackend({
      aor: "sip:dc2@127.0.0.1",
      listen: [],
      drachtio: { host: s2.address, port: s2.adminPort, secret: s2.secret },
    });
    await Promise.all([uac.start(), uas.start()]);
    uac.onTrace((e) => uacTrace.push(e));
  });
  afterAll(async () => {
    await Promise.all([uac?.stop(), uas?.stop()]);
    await Promise.all([s1?.stop(), s2?.stop()]);
  });

  const target = () => `sip:dc2@127.0.0.1:${s2.sipPort};transport=udp`;

  test("INVITE with NRDL, 180, 200 with answer, INFO both ways, BYE answered with the report", async () => {
    const infosAtUas: string[] = [];
    const infosAtUac: string[] = [];
    uas.setHandlers({
      onInvite(req, res) {
        expect(req.body?.content).toBe("<nrdl/>");
        res.progress(180);
        const { dialog, acked } = res.accept({ contentType: NRDL.contentType, content: "<answer/>" });
        dialog.onInfo((info, reply) => {
          infosAtUas.push(info.body?.content ?? "");
          reply.send(200);
        });
        dialog.onBye((_bye, reply) => reply.send(200, undefined, { body: { ...NRDL, content: "<report/>" } }));
        void acked.then(() => dialog.info({ ...NRDL, content: "<from-uas/>" }));
      },
    });
    const provisional: number[] = [];
    const call = uac.invite(target(), NRDL, { onProgress: (r) => provisional.push(r.status) });
    const { dialog, response } = await call.established;
    expect(response.status).toBe(200);
    expect(response.body?.content).toBe("<answer/>");
    expect(provisional).toContain(180);
    dialog.onInfo((info, reply) => {
      infosAtUac.push(info.body?.content ?? "");
      reply.send(200);
    });
    const info = await dialog.info({ ...NRDL, content: "<progress/>" });
    expect(info.status).toBe(200);
    await new Promise((r) => setTimeout(r, 300));
    expect(infosAtUas).toEqual(["<progress/>"]);
    expect(infosAtUac).toEqual(["<from-uas/>"]);
    const bye = await dialog.bye({ ...NRDL, content: "<source-report/>" });
    expect(bye.status).toBe(200);
    expect(bye.body?.content).toBe("<report/>");
    expect(uacTrace.some((e) => e.direction === "sent" && e.message.startsWith("INVITE "))).toBe(true);
  });

  test("refusal with Warning; unknown body type is 415", async () => {
    uas.setHandlers({
      onInvite: (_req, res) => res.reject(new TeleportError(488, "Not Acceptable Here", ["vm1: no such VM"])),
    });
    const err = await uac.invite(target(), NRDL).established.catch((e: unknown) => TeleportError.from(e));
    expect(err).toBeInstanceOf(TeleportError);
    expect((err as TeleportError).status).toBe(488);
    expect((err as TeleportError).details.join()).toContain("vm1: no such VM");
    const sdp = await uac
      .invite(target(), { contentType: "application/sdp", content: "v=0\r\n" })
      .established.catch((e: unknown) => TeleportError.from(e));
    expect((sdp as TeleportError).status).toBe(415);
  });

  test("CANCEL before the answer: 487 and the UAS hears of it", async () => {
    let cancelled!: () => void;
    const heard = new Promise<void>((r) => (cancelled = r));
    uas.setHandlers({
      onInvite: (_req, res) => {
        res.progress(180);
        res.onCancel(() => cancelled());
      },
    });
    const call = uac.invite(target(), NRDL, { onProgress: () => call.cancel() });
    const err = await call.established.catch((e: unknown) => TeleportError.from(e));
    expect((err as TeleportError).status).toBe(487);
    await heard;
  });

  test("OPTIONS lists what we accept", async () => {
    const res = await uac.options(target());
    expect(res.status).toBe(200);
    expect(res.header("Accept")).toBe("application/nrdl+xml");
  });

  test("digest: SHA-256 answered (srf speaks MD5 only), password never traced", async () => {
    const digest = new DigestServer({ realm: "dc2", users: { dc1: "s3cret-pw" }, algorithms: ["SHA-256"] });
    let user: string | undefined;
    uas.setHandlers({
      onInvite(req, res) {
        const v = digest.verify(req.header("Authorization"), "INVITE");
        if (!v.ok)
          return res.reject(new TeleportError(401, "Unauthorized"), {
            headers: { "WWW-Authenticate": digest.challenges() },
          });
        user = v.user;
        res.accept(NRDL);
      },
    });
    const { dialog } = await uac.invite(target(), NRDL).established;
    expect(user).toBe("dc1");
    await dialog.bye();
    const all = uacTrace.map((e) => e.message).join("\n");
    expect(all).toContain("algorithm=SHA-256");
    expect(all).not.toContain("s3cret-pw");
  });

  test("drachtio-server restart: dialogs in flight end, the backend reconnects and calls work again", async () => {
    uas.setHandlers({ onInvite: (_req, res) => void res.accept(NRDL) });
    const { dialog } = await uac.invite(target(), NRDL).established;
    const ended = new Promise<string>((r) => dialog.onTerminated(r));
    await s1.restart();
    expect(await ended).toContain("drachtio-server connection lost");
    // srf reconnects with a backoff; a new call goes through once it has
    const deadline = Date.now() + 20_000;
    for (;;) {
      const ok = await uac
        .invite(target(), NRDL)
        .established.then(async ({ dialog: d }) => (await d.bye(), true))
        .catch(() => false);
      if (ok) break;
      if (Date.now() > deadline) throw new Error("no reconnect within 20 s");
      await new Promise((r) => setTimeout(r, 500));
    }
  });
});
