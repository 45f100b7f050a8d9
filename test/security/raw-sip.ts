/**
 * A bare SIP client on a UDP socket or a TCP connection for the security tests: it sends exactly
 * the text it is given (forged, replayed, broken) and collects whatever comes back.
 */
import { createHash, randomBytes } from "node:crypto";
import dgram from "node:dgram";
import fs from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { parseDigestHeader } from "../../lib/sip/digest";
import { StreamFramer } from "../../lib/sip/wire";
import { buildNrdl, offerDocument } from "../../nrdl";

export interface RawResponse {
  status: number;
  text: string;
  header(name: string): string[];
}

function parseResponse(text: string): RawResponse {
  const head = text.slice(0, text.indexOf("\r\n\r\n") >= 0 ? text.indexOf("\r\n\r\n") : text.length);
  return {
    status: Number(text.slice(8, 11)),
    text,
    header: (name) =>
      head
        .split("\r\n")
        .filter((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`))
        .map((l) => l.slice(l.indexOf(":") + 1).trim()),
  };
}

export class RawSipClient {
  private readonly received: RawResponse[] = [];
  private waiters: Array<() => void> = [];
  readonly localPort: number;

  private constructor(
    private readonly sendBytes: (data: Buffer | string) => void,
    localPort: number,
    readonly close: () => void,
  ) {
    this.localPort = localPort;
  }

  /** `local`: the address to send from (another loopback address, or one in a test's namespace). */
  static async udp(port: number, host = "127.0.0.1", local = "127.0.0.1"): Promise<RawSipClient> {
    const sock = dgram.createSocket("udp4");
    await new Promise<void>((r) => sock.bind(0, local, () => r()));
    const client = new RawSipClient(
      (d) => sock.send(d, port, host),
      sock.address().port,
      () => sock.close(),
    );
    sock.on("message", (m) => client.push(m.toString("utf8")));
    return client;
  }

  static async tcp(port: number, host = "127.0.0.1", local?: string): Promise<RawSipClient> {
    const sock = net.connect({ port, host, localAddress: local });
    await new Promise<void>((resolve, reject) => sock.once("connect", resolve).once("error", reject));
    return RawSipClient.stream(sock);
  }

  /** Over TLS, with a client certificate when `client` has one (verifying the server against `ca`). */
  static async tls(port: number, client: { ca: string; cert?: string; key?: string }): Promise<RawSipClient> {
    const read = (f?: string) => (f ? fs.readFileSync(f) : undefined);
    const sock = tls.connect({
      port,
      host: "127.0.0.1",
      ca: read(client.ca),
      cert: read(client.cert),
      key: read(client.key),
    });
    await new Promise<void>((resolve, reject) => sock.once("secureConnect", resolve).once("error", reject));
    return RawSipClient.stream(sock);
  }

  private static stream(sock: net.Socket): RawSipClient {
    sock.on("error", () => undefined);
    const framer = new StreamFramer(1 << 22);
    const client = new RawSipClient(
      (d) => sock.write(d),
      sock.localPort ?? 0,
      () => sock.destroy(),
    );
    sock.on("data", (c: Buffer) => framer.push(c).forEach((m) => client.push(m)));
    return client;
  }

  private push(text: string): void {
    if (!text.startsWith("SIP/2.0 ")) return;
    this.received.push(parseResponse(text));
    for (const w of this.waiters.splice(0)) w();
  }

  send(data: Buffer | string): void {
    this.sendBytes(data);
  }

  /** Every response received so far for a Call-ID, in arrival order. */
  all(callId: string): RawResponse[] {
    return this.received.filter((x) => x.header("call-id")[0] === callId);
  }

  /** The first final response (>= 200) for a Call-ID (and CSeq, e.g. "2 BYE"), or undefined after `timeoutMs`. */
  async final(callId: string, timeoutMs = 3000, cseq?: string): Promise<RawResponse | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.received.find(
        (x) =>
          x.status >= 200 && x.header("call-id")[0] === callId && (cseq === undefined || x.header("cseq")[0] === cseq),
      );
      if (r) return r;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

export interface RawInvite {
  text: string;
  callId: string;
}

/** An INVITE as a peer would write it; `extra` header lines go before Content-Type. */
export function rawInvite(
  target: string,
  from: string,
  localPort: number,
  body: string,
  extra: string[] = [],
  transport = "UDP",
): RawInvite {
  const callId = randomBytes(8).toString("hex");
  const text = [
    `INVITE ${target} SIP/2.0`,
    `Via: SIP/2.0/${transport} 127.0.0.1:${localPort};branch=z9hG4bK${randomBytes(6).toString("hex")};rport`,
    "Max-Forwards: 70",
    `From: <${from}>;tag=${randomBytes(4).toString("hex")}`,
    `To: <${target}>`,
    `Call-ID: ${callId}`,
    "CSeq: 1 INVITE",
    `Contact: <sip:raw@127.0.0.1:${localPort}>`,
    ...extra,
    "Content-Type: application/nrdl+xml",
    `Content-Length: ${Buffer.byteLength(body)}`,
    "",
    body,
  ].join("\r\n");
  return { text, callId };
}

/** Authorization for a challenge, computed the RFC 7616 way independently of the agents' code. */
export function digestAnswer(
  challenge: string,
  user: string,
  password: string,
  method: string,
  uri: string,
  nc = "00000001",
): string {
  const c = parseDigestHeader(challenge);
  const alg = c.algorithm;
  const h = (s: string) =>
    createHash(alg === "MD5" ? "md5" : "sha256")
      .update(s)
      .digest("hex");
  const cnonce = randomBytes(4).toString("hex");
  const response = h(`${h(`${user}:${c.realm}:${password}`)}:${c.nonce}:${nc}:${cnonce}:auth:${h(`${method}:${uri}`)}`);
  return (
    `Digest username="${user}", realm="${c.realm}", nonce="${c.nonce}", uri="${uri}", ` +
    `response="${response}", algorithm=${alg}, qop=auth, nc=${nc}, cnonce="${cnonce}"`
  );
}

/**
 * A request inside the dialog `invite` opened (its From, the To tag of `ok`, its Call-ID), as the
 * caller would send it, or as a forger who read the dialog's identifiers off the wire would.
 */
export function rawInDialog(
  invite: RawInvite,
  ok: RawResponse | undefined,
  method: string,
  cseq: number,
  opts: { localPort: number; transport?: string; extra?: string[]; body?: { type: string; content: string } },
): string {
  const target = /^INVITE (\S+) /.exec(invite.text)?.[1] ?? "";
  const toTag = /;tag=([^;>\s]+)/.exec(ok?.header("to")[0] ?? "")?.[1];
  const from = /^From: (.*)$/m.exec(invite.text)?.[1];
  const body = opts.body?.content ?? "";
  const branch = `z9hG4bK${randomBytes(6).toString("hex")}`;
  return [
    `${method} ${target} SIP/2.0`,
    `Via: SIP/2.0/${opts.transport ?? "UDP"} 127.0.0.1:${opts.localPort};branch=${branch};rport`,
    "Max-Forwards: 70",
    `From: ${from}`,
    `To: <${target}>;tag=${toTag}`,
    `Call-ID: ${invite.callId}`,
    `CSeq: ${cseq} ${method}`,
    ...(opts.extra ?? []),
    ...(opts.body ? [`Content-Type: ${opts.body.type}`] : []),
    `Content-Length: ${Buffer.byteLength(body)}`,
    "",
    body,
  ].join("\r\n");
}

/** An NRDL offer of one 96 MiB VM to dc2 on loopback, with a fresh migration id. */
export function rawOffer(vm: string, sourceUri = "sip:dc1@127.0.0.1"): string {
  return buildNrdl(
    offerDocument({
      id: `mig-${randomBytes(3).toString("hex")}`,
      sourceUri,
      destinationUri: "sip:dc2@127.0.0.1",
      vms: [{ name: vm, memoryMib: 96 }],
    }),
  );
}

/** The SHA-256 challenge of a 401, or a failure that shows what came instead. */
export function sha256Challenge(r: RawResponse | undefined): string {
  const c = r?.header("www-authenticate").find((h) => /SHA-256/.test(h));
  if (!c) throw new Error(`no SHA-256 challenge in ${r?.text ?? "(no response)"}`);
  return c;
}
