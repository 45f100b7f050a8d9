/**
 * Our UAC: against `sipp -sn uas`, and against another of our agents for CANCEL, OPTIONS, 400, 3xx and Info-Package
 * checks.
 */
import { TeleportError } from "../../lib/errors";
import type { SipJsBackend } from "../../lib/sip";
import { randomPort } from "../../bench/sipp";
import { ANSWER, NRDL, OFFER, answerEverything, listenerPort, runSipp, startAgent } from "./helpers";

const offer = { contentType: NRDL, content: OFFER };

describe("our UAC against sipp -sn uas", () => {
  let uac: SipJsBackend;
  afterEach(() => uac.stop());

  // sipp's uas scenario lingers 4 s after BYE: run both transports at once.
  it("establishes and ends a dialog over UDP and TCP", async () => {
    uac = await startAgent("dc1", ["udp", "tcp"]);
    await Promise.all([call("u1", "udp"), call("t1", "tcp")]);
  });

  async function call(mode: string, kind: string): Promise<void> {
    const port = randomPort();
    const sipp = runSipp(["-sn", "uas", "-t", mode, "-i", "127.0.0.1", "-p", String(port), "-m", "1"], 20000);
    await new Promise((r) => setTimeout(r, 300)); // sipp binds its socket
    const call = uac.invite(`sip:service@127.0.0.1:${port}${kind === "tcp" ? ";transport=tcp" : ""}`, offer);
    const { dialog, response } = await call.established;
    expect(response.status).toBe(200);
    await new Promise((r) => setTimeout(r, 100));
    const bye = await dialog.bye();
    expect(bye.status).toBe(200);
    const r = await sipp;
    expect({ successful: r.successful, failed: r.failed }).toEqual({ successful: 1, failed: 0 });
  }
});

describe("two of our agents", () => {
  let a: SipJsBackend;
  let b: SipJsBackend;
  beforeEach(async () => {
    a = await startAgent("dc1", ["udp"]);
    b = await startAgent("dc2", ["udp"]);
  });
  afterEach(async () => {
    await a.stop();
    await b.stop();
  });
  const bUri = (): string => `sip:dc2@127.0.0.1:${listenerPort(b, "udp")}`;

  it("carries NRDL offer, answer and INFO status both ways with the Info-Package", async () => {
    const infos: string[] = [];
    b.setHandlers({
      onInvite: (req, res) => {
        expect(req.body).toEqual(offer);
        expect(req.header("Recv-Info")).toBe("sip-teleport-status");
        const { dialog } = res.accept({ contentType: NRDL, content: ANSWER });
        dialog.onInfo((info, reply) => {
          infos.push(`${info.header("Info-Package")} ${info.body?.content}`);
          reply.send(200);
        });
      },
    });
    const { dialog, response } = await a.invite(bUri(), offer).established;
    expect(response.body).toEqual({ contentType: NRDL, content: ANSWER });
    expect(response.header("Recv-Info")).toBe("sip-teleport-status");
    await dialog.info({ contentType: NRDL, content: "<status/>" });
    const ended = new Promise<string>((r) => dialog.onTerminated(r));
    expect((await dialog.bye()).status).toBe(200);
    expect(await ended).toBe("BYE sent");
    expect(infos).toEqual(["sip-teleport-status <status/>"]);
  });

  it("answers CANCEL with 487 and tells the handler", async () => {
    const cancelled = new Promise<void>((resolve) =>
      b.setHandlers({
        onInvite: (_req, res) => {
          res.progress(180);
          res.onCancel(resolve);
        },
      }),
    );
    const call = a.invite(bUri(), offer, { onProgress: () => call.cancel() });
    await expect(call.established).rejects.toMatchObject({ status: 487 });
    await cancelled;
  });

  it("answers OPTIONS with Allow, Accept and Recv-Info", async () => {
    const r = await a.options(bUri());
    expect(r.status).toBe(200);
    expect(r.header("Accept")).toBe(NRDL);
    expect(r.header("Allow")).toContain("INFO");
    expect(r.header("Recv-Info")).toBe("sip-teleport-status");
  });

  it("rejects malformed NRDL with 400 and a Warning that says what is wrong", async () => {
    b.setHandlers({
      onInvite: (_req, res) => res.reject(new TeleportError(400, "Malformed NRDL", ["line 1: <vm> needs a name"])),
    });
    const err = (await a.invite(bUri(), offer).established.catch((e: unknown) => e)) as TeleportError;
    expect(err.status).toBe(400);
    expect(err.details[0]).toMatch(/^399 127\.0\.0\.1 "Malformed NRDL; line 1: <vm> needs a name"$/);
  });

  it("answers 500 with the reason when the INVITE handler throws, and keeps serving", async () => {
    let calls = 0;
    b.setHandlers({
      onInvite: (_req, res) => {
        if (calls++ === 0) throw new Error("hypervisor unreachable");
        res.accept({ contentType: NRDL, content: ANSWER });
      },
    });
    await expect(a.invite(bUri(), offer).established).rejects.toMatchObject({
      status: 500,
      details: [expect.stringContaining("hypervisor unreachable")],
    });
    const { dialog } = await a.invite(bUri(), offer).established;
    await dialog.bye();
  });

  it("refuses a non-NRDL INVITE with 415 while another dialog stays up", async () => {
    answerEverything(b);
    const { dialog } = await a.invite(bUri(), offer).established;
    await expect(
      a.invite(bUri(), { contentType: "application/sdp", content: "v=0\r\n" }).established,
    ).rejects.toMatchObject({ status: 415 });
    expect((await dialog.info({ contentType: NRDL, content: "<status/>" })).status).toBe(200);
    await dialog.bye();
  });

  it("follows a 302 to the new destination", async () => {
    const c = await startAgent("dc3", ["udp"]);
    try {
      const seen = answerEverything(c);
      b.setHandlers({
        onInvite: (_req, res) => res.redirect(`sip:dc3@127.0.0.1:${listenerPort(c, "udp")}`),
      });
      const { dialog, response } = await a.invite(bUri(), offer).established;
      expect(response.header("Contact")).toContain(`dc3@127.0.0.1:${listenerPort(c, "udp")}`);
      expect(seen.invites).toBe(1);
      await dialog.bye();
    } finally {
      await c.stop();
    }
  });

  it("does not follow a 302 that redirectAllowed refuses: 403, the target never sees it", async () => {
    const c = await startAgent("dc3", ["udp"]);
    try {
      const seen = answerEverything(c);
      const elsewhere = `sip:dc3@127.0.0.1:${listenerPort(c, "udp")}`;
      b.setHandlers({ onInvite: (_req, res) => res.redirect(elsewhere) });
      const call = a.invite(bUri(), offer, {
        redirectAllowed: (target) => `${target} is not a permitted destination`,
      });
      await expect(call.established).rejects.toMatchObject({
        status: 403,
        message: expect.stringContaining(`is not a permitted destination`),
      });
      expect(seen.invites).toBe(0);
    } finally {
      await c.stop();
    }
  });
});
