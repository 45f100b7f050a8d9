/**
 * In-dialog requests to the source (#23, point 6): a forged BYE would end its dialog (and the
 * migration with it), a forged INFO steer a post-copy recovery. The destination's INFO and BYE
 * must arrive the way its 200 OK did: from the same network address over the same transport
 * (the dialog's remote target, or the proxy of its route set, which relayed that 200); over TLS,
 * a connection other than the 200's that shows a certificate must show the 200's (the source's
 * listener asks for one only with sip.tls.clientCa). Anything else is refused with 403; the dialog
 * goes on.
 */
import { isIP } from "node:net";
import type { IncomingRequest, Peer, ResponseInfo } from "../sip/backend";

export interface AnswerProof {
  /** Where the 200 OK came from. */
  peer: Peer;
  /** The remote target's host (Contact), when it is an address and no proxy stays in the path. */
  target?: string;
}

const plain = (address: string): string => address.replace(/^::ffff:(?=\d+\.)/i, "").replace(/^\[|\]$/g, "");

/** The contact host of a Contact header value, e.g. `<sip:dc2@10.0.0.2:5060;transport=tcp>` -> 10.0.0.2. */
function contactHost(contact: string | undefined): string | undefined {
  const m = /<?sips?:(?:[^@>]*@)?(\[[^\]]+\]|[^;:>?]+)/i.exec(contact ?? "");
  return m && isIP(plain(m[1])) ? plain(m[1]) : undefined;
}

/** What the 200 OK that opened the dialog proved, for the dialog's later requests. */
export function answerProof(response: ResponseInfo): AnswerProof | undefined {
  if (!response.source?.address) return undefined;
  // with a Record-Route the destination's requests come through the proxy, never from its Contact
  const routed = response.header("Record-Route") !== undefined;
  return { peer: response.source, target: routed ? undefined : contactHost(response.header("Contact")) };
}

/** undefined when `req` (INFO, BYE) comes the way the 200 did, else the reason for a 403. */
export function sourceInDialogRefusal(req: IncomingRequest, proof: AnswerProof | undefined): string | undefined {
  const from = `${req.method} from ${plain(req.source.address)} over ${req.source.transport.toUpperCase()}`;
  if (!proof) return `${from}: the 200 OK's network source is unknown, so nothing can prove this request`;
  const addresses = [plain(proof.peer.address), ...(proof.target ? [proof.target] : [])];
  const over = proof.peer.transport.toUpperCase();
  const opened = `the dialog's 200 OK came from ${plain(proof.peer.address)} over ${over}`;
  if (!addresses.includes(plain(req.source.address)) || req.source.transport !== proof.peer.transport)
    return `${from}, but ${opened}`;
  const want = proof.peer.certificate;
  // the very connection the verified 200 came over, or a new one from the same address
  if (!want || req.source.port === proof.peer.port) return undefined;
  const got = req.source.certificate;
  // a new connection is asked for a certificate only with sip.tls.clientCa; one it shows must be the 200's
  if (!got) return undefined;
  const same =
    got.subject === want.subject &&
    got.sipUris.length === want.sipUris.length &&
    got.sipUris.every((u, i) => u === want.sipUris[i]);
  return same ? undefined : `${from} with a certificate (${got.subject}) other than the 200 OK's (${want.subject})`;
}
