/**
 * One configuration file per host (JSON). Every field has a default that works on loopback,
 * so `sip-teleport listen` with no file at all is a working destination on 127.0.0.1.
 */
import { isIP } from "node:net";
import { z } from "zod";
import { DestinationPolicy, type DestinationEntry } from "../access/destinations";
import { DEFAULT_TIMERS, DEFAULT_MAX_TIMERS } from "../sip/udp-reliability";
import { ON_ERROR, STRATEGIES } from "../../nrdl/types";
import { COMPRESS_CHOICES } from "../plan/compress";
import { DEDUP_CHOICES, DEDUP_INDEX_PAGES } from "../plan/dedup";

/** 64*T1, RFC 3261's Timer B: how long a source waits for the answer to its INVITE by default. */
export const DEFAULT_ANSWER_TIMEOUT_S = 32;

const sipUri = z.string().regex(/^sips?:[^\s<>"]+$/, 'expected a SIP URI such as "sip:dc2@127.0.0.1"');

const destinationPattern = z.string().regex(/^sips?:\S+$/, 'expected a SIP URI pattern such as "sip:dc2@*"');

/** "10.20.0.0/16", "2001:db8::/48" or a single address. */
const cidr = z.string().refine((v) => {
  const [addr, prefix, extra] = v.split("/");
  const family = isIP(addr);
  if (!family || extra !== undefined) return false;
  return prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 6 ? 128 : 32));
}, 'expected an address or CIDR such as "10.20.0.0/16"');

const destinationEntry = z.object({ uri: destinationPattern, migrationNetworks: z.array(cidr).default([]) }).strict();

const listen = z
  .object({
    transport: z.enum(["udp", "tcp", "tls"]),
    address: z.string().default("127.0.0.1"),
    port: z.number().int().min(0).max(65535).default(5060),
  })
  .strict();

const credentials = z
  .object({ username: z.string().min(1), password: z.string().min(1), realm: z.string().optional() })
  .strict();

/**
 * The drachtio-server an agent attaches to when `sip.backend` is "drachtio" (its admin port, not
 * SIP). The secret comes from a file or an environment variable, never from the config itself.
 */
const drachtio = z
  .object({
    host: z.string().min(1).default("127.0.0.1"),
    port: z.number().int().min(1).max(65535).default(9022),
    /** A file holding the admin secret (first line). */
    secretFile: z.string().optional(),
    /** An environment variable holding the admin secret. */
    secretEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "expected an environment variable name")
      .optional(),
  })
  .strict()
  .refine((d) => (d.secretFile === undefined) !== (d.secretEnv === undefined), {
    message: "sip.drachtio needs exactly one of secretFile or secretEnv",
  });

const portRange = z
  .string()
  .regex(/^\d{1,5}-\d{1,5}$/, 'expected a port range such as "49152-49407"')
  .refine((r) => {
    const [lo, hi] = r.split("-").map(Number);
    return lo >= 1024 && hi <= 65535 && lo <= hi;
  }, "expected 1024 <= low <= high <= 65535");

interface SecurityParts {
  sip: { backend: string; listen: Array<{ transport: string }>; tls?: { clientCa?: string | string[] } };
  security: { allow: string[]; users: Record<string, string>; destinations: DestinationEntry[] };
  limits: { trustedProxies: string[] };
  console: { destinations: string[] };
}

/** A URI entry of security.allow that nothing in the config could ever prove would only match a forged From. */
function provableAllowlist(cfg: SecurityParts, ctx: z.RefinementCtx): void {
  const uriEntries = cfg.security.allow.filter((e) => /^sips?:/i.test(e));
  const digest = Object.keys(cfg.security.users).length > 0;
  const certificates =
    cfg.sip.backend !== "drachtio" &&
    cfg.sip.tls?.clientCa !== undefined &&
    cfg.sip.listen.some((l) => l.transport === "tls");
  const proxies = cfg.limits.trustedProxies.length > 0;
  if (uriEntries.length === 0 || digest || certificates || proxies) return;
  ctx.addIssue({
    code: "custom",
    path: ["security", "allow"],
    message:
      `${uriEntries.join(", ")}: a SIP URI entry matches only a proven identity, and this configuration has no way ` +
      "to prove one (a From header proves nothing). Add security.users (digest), sip.tls.clientCa with a tls " +
      "listener (client certificates), or limits.trustedProxies (a proxy's P-Asserted-Identity); or allow addresses",
  });
}

/**
 * drachtio-server (v0.9.4) can demand a client certificate (DRACHTIO_TLS_VERIFY_CLIENT_CERT=1) but
 * never tells its apps which one came: on that backend a certificate can prove no identity.
 */
function drachtioCertificates(cfg: SecurityParts, ctx: z.RefinementCtx): void {
  if (cfg.sip.backend !== "drachtio" || cfg.sip.tls?.clientCa === undefined) return;
  ctx.addIssue({
    code: "custom",
    path: ["sip", "tls", "clientCa"],
    message:
      'sip.backend "drachtio" cannot take identities from client certificates: drachtio-server does not pass ' +
      "the certificate to its apps. Remove sip.tls.clientCa and prove callers with security.users (digest) or " +
      "limits.trustedProxies (a proxy's P-Asserted-Identity), or use the sipjs backend",
  });
}

/** The console's chooser must not offer what security.destinations forbids. */
function choosableDestinations(cfg: SecurityParts, ctx: z.RefinementCtx): void {
  const allowed = new DestinationPolicy(cfg.security.destinations);
  cfg.console.destinations.forEach((d, i) => {
    const refused = allowed.check(d);
    if (refused) ctx.addIssue({ code: "custom", path: ["console", "destinations", i], message: refused });
  });
}

export const configSchema = z
  .object({
    /** This host's name in reports and logs. */
    host: z.string().min(1).default("localhost"),
    sip: z
      .object({
        /** Our address of record: the To of INVITEs for this host, the From of ours. */
        aor: sipUri.default("sip:teleport@127.0.0.1"),
        listen: z
          .array(listen)
          .min(1)
          .default([
            { transport: "udp", address: "127.0.0.1", port: 5060 },
            { transport: "tcp", address: "127.0.0.1", port: 5060 },
          ]),
        outboundProxy: sipUri.optional(),
        registrar: sipUri.optional(),
        /** Our own credentials, answered to 401/407 challenges. */
        credentials: credentials.optional(),
        tls: z
          .object({
            cert: z.string(),
            key: z.string(),
            ca: z.string().optional(),
            verify: z.boolean().default(true),
            /**
             * Mutual TLS: PEM CA bundle(s) client certificates must chain to. TLS listeners then ask every
             * caller for a certificate; its subjectAltName sip: URIs become proven identities.
             */
            clientCa: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
          })
          .strict()
          .optional(),
        /** Log every SIP message sent and received (credentials masked). */
        trace: z.boolean().default(false),
        /**
         * RFC 3261 T1, the round-trip estimate, in ms: retransmissions start at T1 and a peer that stays
         * silent is given up after 64 x T1 (32 s at the default 500). Lower it only on links whose round
         * trip is known to be far below it; the sipjs backend only (drachtio-server has its own timers).
         */
        timerT1Ms: z.number().int().min(10).max(5000).default(DEFAULT_TIMERS.t1),
        /** Refuse anything but TLS: every listener must be TLS, and a request that arrives otherwise gets 403. */
        tlsOnly: z.boolean().default(false),
        /**
         * The SIP stack: "sipjs" (built in, listens itself) or "drachtio" (a drachtio-srf app on a
         * drachtio-server, which owns the SIP ports; `listen` and `tls` are then the server's business).
         */
        backend: z.enum(["sipjs", "drachtio"]).default("sipjs"),
        drachtio: drachtio.optional(),
      })
      .strict()
      .prefault({})
      .superRefine((sip, ctx) => {
        if (sip.backend === "drachtio" && !sip.drachtio)
          ctx.addIssue({
            code: "custom",
            path: ["drachtio"],
            message: 'sip.backend "drachtio" needs sip.drachtio (host, port, secretFile or secretEnv)',
          });
        if (sip.backend === "drachtio" && sip.timerT1Ms !== DEFAULT_TIMERS.t1)
          ctx.addIssue({
            code: "custom",
            path: ["timerT1Ms"],
            message: "sip.timerT1Ms is the sipjs backend's: with drachtio, set T1 in drachtio-server's own config",
          });
        if (!sip.tlsOnly) return;
        sip.listen.forEach((l, i) => {
          if (l.transport !== "tls")
            ctx.addIssue({
              code: "custom",
              path: ["listen", i, "transport"],
              message: `sip.tlsOnly refuses a ${l.transport} listener: use "tls"`,
            });
        });
        if (!sip.tls)
          ctx.addIssue({ code: "custom", path: ["tls"], message: "sip.tlsOnly needs sip.tls (cert and key)" });
        for (const field of ["outboundProxy", "registrar"] as const) {
          const uri = sip[field];
          if (uri && !/^sips:|;transport=tls/i.test(uri))
            ctx.addIssue({
              code: "custom",
              path: [field],
              message: `sip.tlsOnly: ${field} must be a sips: URI or carry ;transport=tls`,
            });
        }
      }),
    security: z
      .object({
        /**
         * Who may send us migrations (and console MESSAGE triggers): source IP addresses/prefixes, or SIP URI
         * patterns (`*` wildcards) matched only against proven identities. Empty = no one (loopback is no identity).
         */
        allow: z.array(z.string().min(1)).default([]),
        /**
         * Source side: where VMs may be sent (SIP URI patterns, `*` wildcards). Empty = loopback targets only.
         * `{ uri, migrationNetworks }`: also where that destination's answer may put its listeners (CIDRs).
         */
        destinations: z.array(z.union([destinationPattern, destinationEntry])).default([]),
        /** Digest users (name -> password) required of callers; empty = no authentication. */
        users: z.record(z.string(), z.string().min(1)).default({}),
        realm: z.string().default("sip-teleport"),
        /**
         * Refuse requests without valid digest credentials. Default: true when `users` is not empty.
         * false with users: credentials are checked when present, requests without them are judged by the allowlist
         * alone.
         */
        digestRequired: z.boolean().optional(),
        /** Challenge in-dialog INFO and BYE too (not only the INVITE), and require the INVITE's user. */
        digestInDialog: z.boolean().default(true),
        /**
         * Digest algorithms offered and accepted, strongest first. MD5 only for a legacy peer that cannot do
         * SHA-256 (RFC 8760); `config check` warns about it.
         */
        digestAlgorithms: z
          .array(z.enum(["SHA-256", "MD5"]))
          .min(1)
          .refine((a) => new Set(a).size === a.length, "each algorithm once")
          .default(["SHA-256"]),
        /**
         * Accept digest answers without qop=auth (RFC 2069: no client nonce or count, weaker against replay and
         * chosen-plaintext). Only for a legacy peer; `config check` warns about it.
         */
        allowLegacyDigest: z.boolean().default(false),
        /** How long a digest nonce is accepted (each (nonce, nc) only once). */
        nonceTtlS: z.number().int().min(1).max(3600).default(60),
      })
      .strict()
      .prefault({})
      .superRefine((sec, ctx) => {
        if (sec.digestRequired && Object.keys(sec.users).length === 0)
          ctx.addIssue({
            code: "custom",
            path: ["digestRequired"],
            message: "security.digestRequired needs at least one entry in security.users",
          });
      }),
    /** Limits on what the network may make this host do (hostile or broken peers). */
    limits: z
      .object({
        /** Largest SIP message accepted on any transport (UDP datagram or stream message), bytes. */
        maxMessageBytes: z
          .number()
          .int()
          .min(1024)
          .max(1 << 24)
          .default(65536),
        /** Most header lines in one SIP message. */
        maxHeaders: z.number().int().min(16).max(10000).default(256),
        /** Inbound SIP TCP/TLS connections at once (at the limit the oldest that sent no message yet goes). */
        maxConnections: z.number().int().min(1).max(65536).default(512),
        /** Inbound SIP TCP/TLS connections one source address may hold. */
        maxConnectionsPerAddress: z.number().int().min(1).max(65536).default(32),
        /** Close a SIP TCP/TLS connection silent this long (seconds; the TLS handshake included). */
        connectionIdleS: z.number().min(1).max(86400).default(120),
        /** Destination: open dialogs one caller (authenticated user, else address) may hold. */
        dialogsPerCaller: z.number().int().min(1).default(8),
        /**
         * Destination: INVITEs per second one source address may send (burst of the same size); more get 503 with
         * Retry-After.
         */
        invitesPerSecond: z.number().min(0.1).default(20),
        /**
         * Addresses of SIP proxies that relay many callers (e.g. Kamailio). Their P-Asserted-Identity is a
         * proven identity for security.allow (from any other address it is ignored), and their INVITEs are
         * counted per caller (From URI) instead of per address. The proxy must authenticate its callers
         * and set P-Asserted-Identity itself, as deploy/kamailio/kamailio.cfg does.
         */
        trustedProxies: z.array(z.string().min(1)).default([]),
        /**
         * UDP retransmission timers (ours and Timer G's) held at once; beyond it new INVITEs get 503
         * statelessly. Refusals before admission (403, 401, the rate limit's 503) never hold one.
         */
        maxRetransmissionTimers: z.number().int().min(1).max(1_000_000).default(DEFAULT_MAX_TIMERS),
      })
      .strict()
      .prefault({}),
    /** VM definitions (identical on both hosts) or the path of a JSON file that holds them. */
    inventory: z.union([z.string(), z.array(z.unknown())]).default([]),
    runDir: z.string().default(".cache/run"),
    stateDir: z.string().default(".cache/state"),
    libvirt: z
      .object({
        /**
         * How this host's libvirt domains send their memory: "native" (the default) on a TLS-PSK
         * connection of its own beside the gated control connection, which copied disks and post-copy
         * need; "tunnelled" inside libvirt's RPC connection, for an agent that cannot create sockets in
         * libvirtd's run folder (/run/libvirt/qemu). A destination accepts either.
         */
        stream: z.enum(["native", "tunnelled"]).default("native"),
      })
      .strict()
      .prefault({}),
    migration: z
      .object({
        /** Address the destination's migration listeners bind to and announce. */
        address: z.string().default("127.0.0.1"),
        ports: portRange.default("49152-49407"),
        /** Destination: memory kept for the host; an offer needing more than MemAvailable minus this is refused. */
        memoryReserveMib: z.number().int().min(0).default(256),
        /** Destination: free space its run and state dirs must keep (logs, journal, incoming state). */
        minFreeDiskMib: z.number().int().min(0).default(256),
        /**
         * Destination, group commit: announce the group's MACs from here when the source says it stopped
         * (nrdl/SPEC.md 5.6), so its frames wait in the paused copies' taps instead of being lost.
         */
        announceAtSwitchover: z.boolean().default(true),
        /**
         * Group page dedup (nrdl/SPEC.md 5.8): the cap of one dialog's index, in 4 KiB pages (the
         * destination holds up to this many pages in memory, the source as many digests); 0: this
         * host accepts no dedup as a destination and offers none as a source.
         */
        dedupIndexPages: z.number().int().min(0).default(DEDUP_INDEX_PAGES),
        /**
         * Group page dedup: ask a source that can for deflated dedup links (zlib level 1 over the
         * frames, SPEC.md 5.8), which the destination's relays inflate; false: frames as they are.
         */
        dedupDeflate: z.boolean().default(true),
      })
      .strict()
      .prefault({}),
    defaults: z
      .object({
        strategy: z.enum(STRATEGIES).default("sequential"),
        maxParallel: z.number().int().min(1).max(64).default(2),
        bandwidthMbps: z.number().min(0).default(0),
        downtimeLimitMs: z.number().int().min(1).default(300),
        timeoutS: z.number().int().min(1).default(600),
        onError: z.enum(ON_ERROR).default("abort"),
        /**
         * Stream reduction a migration offers (nrdl/SPEC.md 5.7): auto, what both hosts can do when
         * the policy caps bandwidth; none; or one of zstd, zlib, xbzrle. `migrate --compress` overrides.
         */
        compress: z.enum(COMPRESS_CHOICES).default("auto"),
        /**
         * Group page dedup a migration offers (nrdl/SPEC.md 5.8): auto, when the policy caps bandwidth
         * and the move is a group commit; on; off. `migrate --dedup` overrides.
         */
        dedup: z.enum(DEDUP_CHOICES).default("auto"),
      })
      .strict()
      .prefault({}),
    timers: z
      .object({
        /** Destination: disarm a dialog whose migrations have not started this long after 200 OK. */
        idleTimeoutS: z.number().int().min(1).default(60),
        /** Source: CANCEL an INVITE that has no final answer (arming included) after this long, and report 408. */
        answerTimeoutS: z.number().min(1).default(DEFAULT_ANSWER_TIMEOUT_S),
        /** Destination: disarm a dialog that lasts longer than this without activity (session timer). */
        sessionTimeoutS: z.number().int().min(10).default(900),
        /**
         * Source: how long a post-copy whose link broke keeps trying to recover over the SIP dialog;
         * after it both halves stay paused (a post-copy VM cannot go back to the source).
         */
        postcopyRecoveryS: z.number().int().min(1).default(30),
      })
      .strict()
      .prefault({}),
    /** The operator console (`sip-teleport console`) and its SIP MESSAGE trigger. */
    console: z
      .object({
        /** Where the page and API listen; loopback unless you set a token. */
        http: z
          .string()
          .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:]+):\d{1,5}$/, 'expected "address:port" such as "127.0.0.1:8080"')
          .default("127.0.0.1:8080"),
        /** Bearer token for the API; required off loopback (generated and printed when absent). */
        token: z.string().min(16).optional(),
        /** Destinations offered in the chooser (any SIP URI can still be typed). */
        destinations: z.array(sipUri).default([]),
        /**
         * Named plans for the page and the MESSAGE trigger ("migrate NAME to URI"); NRDL examples (exp1..3) need no
         * entry.
         */
        plans: z
          .record(
            z.string().regex(/^[\w.-]+$/, "plan names are letters, digits, _ . -"),
            z.object({ vms: z.array(z.string().min(1)).min(1), strategy: z.enum(STRATEGIES).optional() }).strict(),
          )
          .default({}),
      })
      .strict()
      .prefault({}),
    /** Prometheus metrics of `listen` and `console` (GET /metrics); off unless `http` is set or --metrics given. */
    metrics: z
      .object({
        http: z
          .string()
          .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:]+):\d{1,5}$/, 'expected "address:port" such as "127.0.0.1:9464"')
          .optional(),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(["error", "warn", "info", "verbose", "debug"]).default("info"),
        format: z.enum(["text", "json"]).default("text"),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine(provableAllowlist)
  .superRefine(drachtioCertificates)
  .superRefine(choosableDestinations);

export type HostConfig = z.infer<typeof configSchema>;
