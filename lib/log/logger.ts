import winston from "winston";

/** Keys whose values never reach a log line (teleport secrets, digest credentials). */
const SECRET_KEY = /secret|password|passwd|credential|authorization|nonce|token/i;
/** Header or attribute values inside logged text (SIP traces, NRDL answers). */
const SECRET_TEXT: ReadonlyArray<[RegExp, string]> = [
  [/((?:Proxy-)?Authorization:\s*Digest\s+)[^\r\n]*/gi, "$1<masked>"],
  [/(\bsecret\s*=\s*")[^"]*(")/gi, "$1<masked>$2"],
  [/(\bpassword\s*[=:]\s*"?)[^"\s,]*/gi, "$1<masked>"],
];

/** Mask secrets in free text (used for SIP traces and anything else that echoes wire data). */
export function maskSecrets(text: string): string {
  return SECRET_TEXT.reduce((t, [re, rep]) => t.replace(re, rep), text);
}

function redact(value: unknown, depth = 0): unknown {
  if (depth > 6) return value;
  if (typeof value === "string") return maskSecrets(value);
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  if (value && typeof value === "object" && !(value instanceof Error)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? "<masked>" : redact(v, depth + 1);
    return out;
  }
  return value;
}

const redactFormat = winston.format((info) => {
  for (const key of Object.keys(info)) {
    if (SECRET_KEY.test(key)) info[key] = "<masked>";
    else info[key] = redact(info[key]);
  }
  return info;
});

export type Logger = winston.Logger;

export interface LogOptions {
  level?: string;
  /** "json" for machines, "text" for a terminal. */
  format?: "json" | "text";
  /** Write to stderr so stdout stays free for results and progress. */
  silent?: boolean;
}

export function createLogger(opts: LogOptions = {}): Logger {
  const fmt =
    opts.format === "json"
      ? winston.format.combine(redactFormat(), winston.format.timestamp(), winston.format.json())
      : winston.format.combine(
          redactFormat(),
          winston.format.timestamp({ format: "HH:mm:ss.SSS" }),
          winston.format.printf(({ timestamp, level, message, ...rest }) => {
            const extra = Object.keys(rest).length ? " " + JSON.stringify(rest) : "";
            return `${timestamp} ${level} ${message}${extra}`;
          }),
        );
  return winston.createLogger({
    level: opts.level ?? process.env.SIP_TELEPORT_LOG ?? "info",
    format: fmt,
    silent: opts.silent,
    transports: [
      new winston.transports.Console({ stderrLevels: ["error", "warn", "info", "http", "verbose", "debug", "silly"] }),
    ],
  });
}

/** A logger that drops everything: the default for library use and tests. */
export const silentLogger: Logger = createLogger({ silent: true });
