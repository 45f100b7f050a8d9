/**
 * sip.js' core checks every request without a To tag for a merged request (RFC 3261 §8.2.2.2) by
 * copying and scanning every live server transaction: `Array.from(userAgentServers.values()).some(...)`.
 * Completed server transactions live 32 s on UDP (Timers J and L), so at 200 dialogs/s that is about
 * 19,000 entries per INVITE, the largest cost of a dialog once parsing was cached.
 *
 * This map indexes its servers by the request's (From tag, Call-ID, CSeq). While the core handles one
 * incoming request (`focus()` around `receiveIncomingRequestFromTransport`), `values()` yields only the
 * servers with that request's key: the same answer to the core's check, found without the scan. That
 * check is the core's only use of `values()`; outside a focus it yields everything, as a Map does.
 */
interface Keyed {
  readonly transaction: { readonly request: KeyOf };
}
interface KeyOf {
  readonly fromTag?: string;
  readonly callId: string;
  readonly cseq: number;
}

function keyOf(request: KeyOf): string {
  return `${request.fromTag ?? ""}\n${request.callId}\n${request.cseq}`;
}

export class IndexedServers<V extends Keyed> extends Map<string, V> {
  private readonly byRequest = new Map<string, Map<string, V>>();
  private focused: string | undefined;

  override set(id: string, server: V): this {
    this.unindex(id);
    super.set(id, server);
    const key = keyOf(server.transaction.request);
    const same = this.byRequest.get(key) ?? new Map<string, V>();
    same.set(id, server);
    this.byRequest.set(key, same);
    return this;
  }

  override delete(id: string): boolean {
    this.unindex(id);
    return super.delete(id);
  }

  override clear(): void {
    this.byRequest.clear();
    super.clear();
  }

  override values(): MapIterator<V> {
    if (this.focused === undefined) return super.values();
    return (this.byRequest.get(this.focused) ?? new Map<string, V>()).values();
  }

  /** Run `handle` with values() narrowed to the servers of requests keyed like `request`. */
  focus<T>(request: KeyOf, handle: () => T): T {
    this.focused = keyOf(request);
    try {
      return handle();
    } finally {
      this.focused = undefined;
    }
  }

  private unindex(id: string): void {
    const old = super.get(id);
    if (!old) return;
    const key = keyOf(old.transaction.request);
    const same = this.byRequest.get(key);
    same?.delete(id);
    if (same?.size === 0) this.byRequest.delete(key);
  }
}
