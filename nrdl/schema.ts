/**
 * The NRDL attribute vocabulary as data: one table drives parsing (decode), validation
 * of in-memory documents (accepts) and building (encode), so the three can never disagree.
 * Each attribute and element says the version that introduced it (`since`): a document may use
 * only the vocabulary of its own version. Element structure (which child goes where) is code in
 * parse.ts / build.ts / validate.ts.
 */
import {
  COMMITS,
  COMPRESS_METHODS,
  CONVERGENCE,
  DECISION_OUTCOMES,
  DEDUP_LINKS,
  DEDUP_MODES,
  DISK_FORMATS,
  DISK_MODES,
  HYPERVISORS,
  NAME_PATTERN,
  ON_ERROR,
  OUTCOMES,
  ROLES,
  STRATEGIES,
  VM_STATES,
} from "./types";

export type AttrValue = string | number;

/** How one attribute type is read from the wire, checked in memory, and written back. */
export interface Codec {
  /** What a valid value looks like, for messages: "expected <expected>, got ...". */
  expected: string;
  /** Wire text (entities already resolved) to value, or undefined when invalid. */
  decode(raw: string): AttrValue | undefined;
  accepts(value: unknown): boolean;
  encode(value: AttrValue): string;
}

function textCodec(expected: string, pattern: RegExp): Codec {
  return {
    expected,
    decode: (raw) => (pattern.test(raw) ? raw : undefined),
    accepts: (v) => typeof v === "string" && pattern.test(v),
    encode: String,
  };
}

function integerCodec(expected: string, min: number): Codec {
  const accepts = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= min;
  return {
    expected,
    // Canonical decimal only (no sign, no leading zeros, no exponent): one spelling per value.
    decode: (raw) => (/^(0|[1-9][0-9]{0,15})$/.test(raw) && accepts(Number(raw)) ? Number(raw) : undefined),
    accepts,
    encode: String,
  };
}

export function enumCodec(values: readonly string[]): Codec {
  return textCodec(`one of ${values.join(", ")}`, new RegExp(`^(${values.join("|")})$`));
}

/** Space-separated words from `values` (possibly none), e.g. "qemu libvirt". */
function WORD_LIST(values: readonly string[]): Codec {
  const word = `(${values.join("|")})`;
  return textCodec(`space-separated words from ${values.join(", ")}`, new RegExp(`^(${word}( ${word})*)?$`));
}

/** One or more stream reductions, single spaces between (SPEC.md 5.7); duplicates are checked in validate.ts. */
const METHOD_LIST = textCodec(
  `space-separated stream reductions from ${COMPRESS_METHODS.join(", ")}`,
  new RegExp(`^(${COMPRESS_METHODS.join("|")})( (${COMPRESS_METHODS.join("|")})){0,${COMPRESS_METHODS.length - 1}}$`),
);

/** Multifd channels of one migration: QEMU 7.2 takes 1 to 255; this profile keeps it to 1-16. */
const CHANNELS: Codec = {
  expected: "an integer from 1 to 16",
  decode: (raw) => (/^([1-9]|1[0-6])$/.test(raw) ? Number(raw) : undefined),
  accepts: (v) => Number.isSafeInteger(v) && (v as number) >= 1 && (v as number) <= 16,
  encode: String,
};

/** An answer's dedup: "on" only (absent is the plain stream). */
const DEDUP_ON = enumCodec(["on"]);

export const NAME = textCodec(`a name matching ${NAME_PATTERN.source.slice(1, -1)}`, NAME_PATTERN);
export const POSITIVE_INT = integerCodec("a positive integer", 1);
export const NON_NEGATIVE_INT = integerCodec("a non-negative integer", 0);

/** 0..1 with at most 4 decimals: String() of such a number never uses an exponent, so it round-trips. */
export const FRACTION: Codec = {
  expected: "a number from 0 to 1 with at most 4 decimals",
  decode: (raw) => (/^(0(\.[0-9]{1,4})?|1(\.0{1,4})?)$/.test(raw) ? Number(raw) : undefined),
  accepts: (v) => typeof v === "number" && v >= 0 && v <= 1 && Math.round(v * 1e4) / 1e4 === v,
  encode: String,
};

/** Printable ASCII without space, quote and angle brackets. */
export const SIP_URI = textCodec(
  "a sip: or sips: URI of at most 256 printable characters without spaces",
  /^sips?:[!#-;=?-~]{1,251}$/,
);

const HOST = "([0-9]{1,3}(\\.[0-9]{1,3}){3}|\\[[0-9A-Fa-f:.]{2,45}\\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))";
const PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";
export const MIGRATION_URI = textCodec(
  "a migration URI tcp:HOST:PORT (HOST an IPv4 address, [IPv6] or host name; PORT 1-65535)",
  new RegExp(`^tcp:${HOST}:${PORT}$`),
);

/** Where a disk is mirrored to: the destination's NBD server and the export's name. */
export const NBD_URI = textCodec(
  "an NBD URI nbd://HOST:PORT/EXPORT (HOST an IPv4 address, [IPv6] or host name; EXPORT a name)",
  new RegExp(`^nbd://${HOST}:${PORT}/${NAME_PATTERN.source.slice(1, -1)}$`),
);

export const SECRET = textCodec("a secret of 16 to 128 characters from [A-Za-z0-9_-]", /^[A-Za-z0-9_-]{16,128}$/);

/** Free text for humans: no control characters (they would split log and CLI lines). */
function freeText(max: number): Codec {
  return textCodec(
    `text of 1 to ${max} characters without control characters`,
    new RegExp(`^[^\\p{Cc}\\p{Cs}\\uFFFE\\uFFFF]{1,${max}}$`, "u"),
  );
}
export const REASON = freeText(1024);
/** VM names separated by single spaces, at most 64. */
export const NAME_LIST = textCodec(
  "VM names separated by single spaces",
  new RegExp(`^${NAME_PATTERN.source.slice(1, -1)}( ${NAME_PATTERN.source.slice(1, -1)}){0,63}$`),
);
export const HOST_TEXT = freeText(256);

/**
 * How an attribute appears: `required`; `default` (optional on the wire, always present in memory);
 * `derived` (optional on the wire, computed by the parser, always present in memory); `optional`.
 */
export type AttrUse = "required" | "optional" | "derived" | { default: AttrValue };

export interface AttrSpec {
  /** Name on the wire, e.g. "memory-mib". */
  attr: string;
  /** Property name in memory, e.g. "memoryMib". */
  key: string;
  codec: Codec;
  use: AttrUse;
  /** The NRDL version that introduced it; older documents must not carry it. */
  since: number;
}

function attr(name: string, codec: Codec, use: AttrUse, since = 1): AttrSpec {
  return { attr: name, key: name.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase()), codec, use, since };
}

/** Elements newer than v1, with the version that introduced them (the rest exist since 1). */
const ELEMENT_SINCE: ReadonlyMap<string, number> = new Map([
  ["disk", 2],
  ["export", 2],
  ["recover", 2],
  ["recovery", 2],
  ["switchover", 2],
  ["abort", 2],
  ["decision", 2],
  ["decision-query", 2],
]);

/** The version an element name entered NRDL in (1 for the rest); a Map, as the name comes from the network. */
export function elementSince(name: string): number {
  return ELEMENT_SINCE.get(name) ?? 1;
}

/** Whether `version` may carry this attribute or element. */
export function speaks(version: number, since: number): boolean {
  return version >= since;
}

export function tooNew(what: string, since: number, version: number): string {
  return `${what} needs NRDL version ${since} or later; this document is version ${version}`;
}

export const POLICY_DEFAULTS = {
  strategy: "sequential",
  bandwidthMbps: 0,
  downtimeLimitMs: 300,
  timeoutS: 600,
  onError: "abort",
  convergence: "none",
} as const;

export const VM_DEFAULTS = { hypervisor: "qemu", role: "other", cpus: 1 } as const;

/** Attribute tables in wire order (the builder writes them in this order). */
export const ATTRS = {
  policy: [
    attr("strategy", enumCodec(STRATEGIES), { default: POLICY_DEFAULTS.strategy }),
    attr("max-parallel", POSITIVE_INT, "derived"),
    attr("bandwidth-mbps", NON_NEGATIVE_INT, { default: POLICY_DEFAULTS.bandwidthMbps }),
    attr("downtime-limit-ms", POSITIVE_INT, { default: POLICY_DEFAULTS.downtimeLimitMs }),
    attr("timeout-s", POSITIVE_INT, { default: POLICY_DEFAULTS.timeoutS }),
    attr("on-error", enumCodec(ON_ERROR), { default: POLICY_DEFAULTS.onError }),
    attr("convergence", enumCodec(CONVERGENCE), { default: POLICY_DEFAULTS.convergence }, 2),
    // optional, not defaulted: absent means "source", and documents read before group commit compare equal
    attr("commit", enumCodec(COMMITS), "optional", 2),
    // optional, not defaulted: absent means no reduction offered, and older documents compare equal
    attr("compress", METHOD_LIST, "optional", 2),
    // optional, not defaulted, as compress: absent means off, and older documents compare equal
    attr("dedup", enumCodec(DEDUP_MODES), "optional", 2),
    attr("dedup-link", enumCodec(DEDUP_LINKS), "optional", 2),
  ],
  answer: [
    attr("commit", enumCodec(COMMITS), "optional", 2),
    attr("dedup-pages", POSITIVE_INT, "optional", 2),
    attr("dedup-link", enumCodec(DEDUP_LINKS), "optional", 2),
  ],
  vm: [
    attr("name", NAME, "required"),
    attr("hypervisor", enumCodec(HYPERVISORS), { default: VM_DEFAULTS.hypervisor }),
    attr("role", enumCodec(ROLES), { default: VM_DEFAULTS.role }),
    attr("memory-mib", POSITIVE_INT, "required"),
    attr("cpus", POSITIVE_INT, { default: VM_DEFAULTS.cpus }),
  ],
  disk: [
    attr("target", NAME, "required", 2),
    attr("size-bytes", POSITIVE_INT, "required", 2),
    attr("format", enumCodec(DISK_FORMATS), "required", 2),
    attr("mode", enumCodec(DISK_MODES), "required", 2),
    attr("backing-bytes", POSITIVE_INT, "optional", 2),
  ],
  armed: [
    attr("vm", NAME, "required"),
    attr("uri", MIGRATION_URI, "required"),
    attr("secret", SECRET, "required"),
    attr("compress", enumCodec(COMPRESS_METHODS), "optional", 2),
    attr("channels", CHANNELS, "optional", 2),
    // one spelling per meaning: "on", or no attribute for the plain stream
    attr("dedup", DEDUP_ON, "optional", 2),
  ],
  export: [
    attr("disk", NAME, "required", 2),
    attr("uri", NBD_URI, "required", 2),
    attr("secret", SECRET, "required", 2),
  ],
  rejected: [attr("vm", NAME, "required"), attr("reason", REASON, "required")],
  accepted: [
    attr("vm", NAME, "required"),
    attr("uri", MIGRATION_URI, "required"),
    attr("compress", enumCodec(COMPRESS_METHODS), "optional", 2),
    attr("dedup", DEDUP_ON, "optional", 2),
  ],
  capacity: [
    attr("host", HOST_TEXT, "required"),
    attr("memory-free-mib", NON_NEGATIVE_INT, "required"),
    attr("disk-free-mib", NON_NEGATIVE_INT, "required"),
    attr("ports-free", NON_NEGATIVE_INT, "required"),
    attr("vms-receivable", NON_NEGATIVE_INT, "required"),
    attr("hypervisors", WORD_LIST(HYPERVISORS), "required"),
    attr(
      "versions",
      textCodec("space-separated positive integers", /^[1-9][0-9]{0,5}( [1-9][0-9]{0,5}){0,15}$/),
      "required",
    ),
  ],
  status: [
    attr("vm", NAME, "required"),
    attr("state", enumCodec(VM_STATES), "required"),
    attr("progress", FRACTION, "optional"),
    attr("transferred-bytes", NON_NEGATIVE_INT, "optional"),
    attr("total-ms", NON_NEGATIVE_INT, "optional"),
    attr("downtime-ms", NON_NEGATIVE_INT, "optional"),
    attr("reason", REASON, "optional"),
    attr("disk-progress", FRACTION, "optional", 2),
    attr("disk-transferred-bytes", NON_NEGATIVE_INT, "optional", 2),
    attr("disk-total-bytes", NON_NEGATIVE_INT, "optional", 2),
  ],
  report: [
    attr("outcome", enumCodec(OUTCOMES), "required"),
    attr("group-downtime-ms", NON_NEGATIVE_INT, "optional", 2),
  ],
  recover: [attr("vm", NAME, "required", 2)],
  recovery: [
    attr("vm", NAME, "required", 2),
    attr("uri", MIGRATION_URI, "required", 2),
    attr("secret", SECRET, "required", 2),
  ],
  switchover: [],
  abort: [attr("reason", REASON, "required", 2)],
  decision: [
    attr("outcome", enumCodec(DECISION_OUTCOMES), "required", 2),
    attr("reason", REASON, "optional", 2),
    attr("returned", NAME_LIST, "optional", 2),
  ],
  "decision-query": [],
  result: [
    attr("vm", NAME, "required"),
    attr("state", enumCodec(VM_STATES), "required"),
    attr("host", HOST_TEXT, "required"),
    attr("total-ms", NON_NEGATIVE_INT, "optional"),
    attr("downtime-ms", NON_NEGATIVE_INT, "optional"),
    attr("transferred-bytes", NON_NEGATIVE_INT, "optional"),
    attr("reason", REASON, "optional"),
    attr("disk-transferred-bytes", NON_NEGATIVE_INT, "optional", 2),
  ],
} satisfies Record<string, AttrSpec[]>;

/** Attributes of elements whose in-memory home is not an object of their own. */
export const ROOT_ATTRS = [attr("version", POSITIVE_INT, "required"), attr("id", NAME, "required")];
export const URI_ATTR = attr("uri", SIP_URI, "required");
export const DEPENDS_ON_ATTR = attr("vm", NAME, "required");

/** Show a rejected value in a message without letting a 60 KiB attribute flood the output. */
export function shown(value: unknown): string {
  const text = typeof value === "string" ? value : (JSON.stringify(value) ?? String(value));
  const cut = text.length > 40 ? `${text.slice(0, 40)}… (${text.length} characters)` : text;
  return JSON.stringify(cut);
}
