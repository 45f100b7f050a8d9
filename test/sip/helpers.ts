/** Shared pieces of the SIP tests: agents on ephemeral loopback ports, a fixed answerer, sipp. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createSipBackend, type SipConfig, type SipJsBackend, type TransportKind } from "../../lib/sip";
import type { TransportOptions } from "../../lib/sip/transport";
import { RawSipClient } from "../security/raw-sip";

export { runSipp } from "../../bench/sipp";

export const NRDL = "application/nrdl+xml";
export const ANSWER =
  '<nrdl xmlns="urn:sip-teleport:nrdl:1" version="1"><answer><vm name="router1" accepted="true"/></answer></nrdl>';
export const OFFER =
  '<nrdl xmlns="urn:sip-teleport:nrdl:1" version="1"><offer><vm name="router1" role="router" ' +
  'memory-mib="96"/></offer></nrdl>';
export const FIXTURES = path.join(__dirname, "..", "fixtures");

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `sip-teleport-${prefix}-`));
}

export async function startAgent(
  user: string,
  kinds: TransportKind[],
  extra: Partial<SipConfig> = {},
  overrides: Partial<TransportOptions> = {},
): Promise<SipJsBackend> {
  const host = extra.listen?.[0]?.host ?? "127.0.0.1";
  const backend = createSipBackend(
    {
      aor: `sip:${user}@${host.includes(":") ? `[${host}]` : host}`,
      listen: kinds.map((transport) => ({ transport, host, port: 0 })),
      ...extra,
    },
    overrides,
  );
  await backend.start();
  return backend;
}

/** A destination agent without migration logic: answers every offer with ANSWER and counts what it sees. */
export function answerEverything(backend: SipJsBackend): {
  infos: number;
  byes: number;
  acks: number;
  invites: number;
  ended: number;
} {
  const seen = { infos: 0, byes: 0, acks: 0, invites: 0, ended: 0 };
  backend.setHandlers({
    onInvite: (_req, res) => {
      seen.invites++;
      const { dialog, acked } = res.accept({ contentType: NRDL, content: ANSWER });
      acked.then(
        () => seen.acks++,
        () => undefined,
      );
      dialog.onInfo((_r, reply) => {
        seen.infos++;
        reply.send(200);
      });
      dialog.onBye((_r, reply) => {
        seen.byes++;
        reply.send(200);
      });
      dialog.onTerminated(() => seen.ended++);
    },
  });
  return seen;
}

export function listenerPort(backend: SipJsBackend, kind: TransportKind): number {
  const l = backend.listeners.find((x) => x.transport === kind);
  if (!l) throw new Error(`no ${kind} listener`);
  return l.port;
}

/** An answer-everything agent and a raw UDP client facing it, for tests that write the peer's SIP by hand. */
export async function withRawUas(
  run: (t: { raw: RawSipClient; target: string; seen: ReturnType<typeof answerEverything> }) => Promise<void>,
): Promise<void> {
  const uas = await startAgent("dc2", ["udp"]);
  const seen = answerEverything(uas);
  const port = listenerPort(uas, "udp");
  const raw = await RawSipClient.udp(port);
  try {
    await run({ raw, target: `sip:dc2@127.0.0.1:${port}`, seen });
  } finally {
    raw.close();
    await uas.stop();
  }
}
