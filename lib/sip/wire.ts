/**
 * Just enough SIP text handling for the transport layer: it routes and frames messages
 * without a full parse (the sip.js parser does that once, in the user agent).
 */

const CRLF2 = "\r\n\r\n";

export interface ViaInfo {
  protocol: string;
  host: string;
  port?: number;
  branch?: string;
  received?: string;
  /** undefined: no rport; "": rport requested without a value. */
  rport?: string;
}

/** Header names and their compact forms (RFC 3261 7.3.3) that the transport reads. */
const COMPACT: Record<string, string> = {
  via: "v",
  "content-length": "l",
  "call-id": "i",
  contact: "m",
  from: "f",
  to: "t",
};

export function isRequest(text: string): boolean {
  return !text.startsWith("SIP/2.0 ");
}

export function headOf(text: string): string {
  const end = text.indexOf(CRLF2);
  return end < 0 ? text : text.slice(0, end);
}

/** All values of a header, comma-separated values not split (Via handled by topVia). */
export function headerValues(head: string, name: string): string[] {
  const lower = name.toLowerCase();
  const short = COMPACT[lower];
  const out: string[] = [];
  for (const line of head.split("\r\n").slice(1)) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const key = line.slice(0, colon).trim().toLowerCase();
    if (key === lower || key === short) out.push(line.slice(colon + 1).trim());
  }
  return out;
}

export function firstHeader(head: string, name: string): string | undefined {
  return headerValues(head, name)[0];
}

/** The first comma-separated element of the first header value (top Via, top Route). */
export function topValue(head: string, name: string): string | undefined {
  const v = firstHeader(head, name);
  if (v === undefined) return undefined;
  return splitTopLevel(v)[0];
}

/** Split on commas outside <> and quotes. */
function splitTopLevel(value: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (c === '"') quoted = !quoted;
    else if (!quoted && c === "<") depth++;
    else if (!quoted && c === ">") depth--;
    else if (!quoted && depth === 0 && c === ",") {
      out.push(value.slice(start, i).trim());
      start = i + 1;
    }
  }
  out.push(value.slice(start).trim());
  return out;
}

export function parseVia(value: string): ViaInfo | undefined {
  const m = /^SIP\s*\/\s*2\.0\s*\/\s*(\w+)\s+(\[[^\]]+\]|[^\s;:]+)(?::(\d+))?\s*(.*)$/i.exec(value);
  if (!m) return undefined;
  const params = new Map<string, string>();
  for (const p of m[4].split(";").slice(1)) {
    const [k, v] = p.split("=");
    params.set(k.trim().toLowerCase(), (v ?? "").trim());
  }
  return {
    protocol: m[1].toUpperCase(),
    host: m[2],
    port: m[3] ? Number(m[3]) : undefined,
    branch: params.get("branch"),
    received: params.get("received"),
    rport: params.get("rport"),
  };
}

export function topVia(head: string): ViaInfo | undefined {
  const v = topValue(head, "via");
  return v === undefined ? undefined : parseVia(v);
}

/** The method a message is about: the request method or the CSeq method of a response. */
export function cseqMethod(head: string): string {
  return (firstHeader(head, "cseq") ?? "").split(/\s+/)[1]?.toUpperCase() ?? "";
}

export function statusOf(text: string): number {
  return Number(text.slice(8, 11));
}

/** Stamp received/rport on the top Via of a request (RFC 3261 18.2.1, RFC 3581). */
export function stampVia(text: string, address: string, port: number, forceRport: boolean): string {
  const lineRe = /^(Via|v)([ \t]*:[ \t]*)([^\r\n,]*)/im;
  const m = lineRe.exec(text);
  if (!m) return text;
  let via = m[3].replace(/;\s*received=[^;,\s]*/i, "");
  via = /;\s*rport(=[^;,\s]*)?/i.test(via)
    ? via.replace(/;\s*rport(=[^;,\s]*)?/i, `;rport=${port}`)
    : forceRport
      ? `${via};rport=${port}`
      : via;
  via += `;received=${address}`;
  return text.slice(0, m.index) + m[1] + m[2] + via + text.slice(m.index + m[0].length);
}

/** Bracket IPv6 literals for use in a URI or Via. */
export function hostPort(host: string, port: number): string {
  return `${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}`;
}

export function unbracket(host: string): string {
  return host.startsWith("[") ? host.slice(1, -1) : host;
}

/** Strip the IPv4-mapped prefix Node reports on dual-stack sockets. */
export function normalizeAddress(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

/**
 * Frames a byte stream (TCP, TLS) into SIP messages by Content-Length counted in bytes.
 * CRLF keep-alives between messages are skipped.
 */
export class StreamFramer {
  private buffer: Buffer = Buffer.alloc(0);
  /** Set once a message exceeded the limit: the stream cannot be framed any more. */
  failed = false;

  constructor(private readonly maxBytes = 1 << 20) {}

  /** The start of what is buffered (at most 64 KiB), e.g. to address a refusal. */
  pending(): string {
    return this.buffer.subarray(0, 65536).toString("utf8");
  }

  /** Returns the complete messages now available; throws when a message exceeds the limit. */
  push(chunk: Buffer): string[] {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    const out: string[] = [];
    for (;;) {
      let start = 0;
      while (start + 1 < this.buffer.length && this.buffer[start] === 13 && this.buffer[start + 1] === 10) start += 2;
      if (start) this.buffer = this.buffer.subarray(start);
      const headEnd = this.buffer.indexOf(CRLF2);
      if (headEnd < 0) break;
      const head = this.buffer.subarray(0, headEnd).toString("utf8");
      const lengthHeader = /^(?:content-length|l)[ \t]*:[ \t]*(\d+)/im.exec(head);
      const total = headEnd + 4 + (lengthHeader ? Number(lengthHeader[1]) : 0);
      if (this.buffer.length < total) break;
      out.push(this.buffer.subarray(0, total).toString("utf8"));
      this.buffer = this.buffer.subarray(total);
    }
    if (this.buffer.length > this.maxBytes) {
      this.failed = true;
      throw new Error(`SIP message larger than ${this.maxBytes} bytes`);
    }
    return out;
  }
}

/** Cut a datagram at its Content-Length (bytes); undefined when the body is shorter than announced. */
export function trimDatagram(datagram: Buffer): string | undefined {
  const headEnd = datagram.indexOf(CRLF2);
  if (headEnd < 0) return undefined;
  const head = datagram.subarray(0, headEnd).toString("utf8");
  const lengthHeader = /^(?:content-length|l)[ \t]*:[ \t]*(\d+)/im.exec(head);
  if (!lengthHeader) return datagram.toString("utf8");
  const total = headEnd + 4 + Number(lengthHeader[1]);
  return datagram.length < total ? undefined : datagram.subarray(0, total).toString("utf8");
}

/** Header lines in a message head (the start line not counted). */
export function headerCount(head: string): number {
  let n = 0;
  for (let i = head.indexOf("\r\n"); i >= 0; i = head.indexOf("\r\n", i + 2)) n++;
  return n;
}

/**
 * A response built from a request's raw text, for requests refused before any parser sees
 * them (too large, too many headers, unparsable). Only the top Via is copied: the answer goes
 * back to the sender anyway, and a 10,000-Via request must not yield a 10,000-Via answer.
 * Undefined when the request lacks what a response needs (Via, From, To, Call-ID, CSeq).
 */
export function rawResponse(request: string, status: number, reason: string): string | undefined {
  const head = headOf(request).slice(0, 65536);
  if (!isRequest(head) || !/^[A-Z]+ \S+ SIP\/2\.0\r?$/m.test(head.split("\r\n")[0])) return undefined;
  if (head.startsWith("ACK ")) return undefined; // never answer an ACK
  const one = (name: string) => firstHeader(head, name);
  const via = topValue(head, "via");
  const [from, to, callId, cseq] = [one("from"), one("to"), one("call-id"), one("cseq")];
  if (!via || !parseVia(via) || !from || !to || !callId || !cseq) return undefined;
  const safe = (s: string) => s.replace(/[\r\n]/g, " ").slice(0, 1024);
  const toTagged = /;\s*tag=/i.test(to) ? to : `${to};tag=lim${Date.now().toString(36)}`;
  return [
    `SIP/2.0 ${status} ${reason}`,
    `Via: ${safe(via)}`,
    `From: ${safe(from)}`,
    `To: ${safe(toTagged)}`,
    `Call-ID: ${safe(callId)}`,
    `CSeq: ${safe(cseq)}`,
    "Content-Length: 0",
    "",
    "",
  ].join("\r\n");
}
