/**
 * Errors are values that carry the SIP status code the peer or operator will see,
 * a one-line reason a human can act on, and optional details (e.g. every NRDL violation).
 * It lives in nrdl/, the bottom layer, because the NRDL parser and validator throw it too.
 */
export class TeleportError extends Error {
  constructor(
    /** SIP status code that describes the failure (400, 403, 415, 486, 488, 500, 503, 504 ...). */
    readonly status: number,
    /** Short reason phrase, suitable for a SIP Warning header or a CLI error line. */
    readonly reason: string,
    /** Longer explanations, one per line (validator messages, per-VM rejections). */
    readonly details: readonly string[] = [],
  ) {
    super(details.length ? `${status} ${reason}: ${details.join("; ")}` : `${status} ${reason}`);
    this.name = "TeleportError";
  }

  /** Wrap anything thrown into a TeleportError (500 unless it already is one). */
  static from(err: unknown, status = 500): TeleportError {
    if (err instanceof TeleportError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new TeleportError(status, message);
  }
}
