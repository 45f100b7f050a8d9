/** fast-check generators of valid NRDL documents, one per body kind. */
import fc from "fast-check";
import { minimumVersion } from "../../nrdl";
import { HOST_TEXT, REASON } from "../../nrdl/schema";
import {
  DISK_FORMATS,
  DISK_MODES,
  NRDL_VERSION,
  HYPERVISORS,
  NAME_PATTERN,
  COMMITS,
  COMPRESS_METHODS,
  CONVERGENCE,
  DECISION_OUTCOMES,
  DEDUP_MODES,
  ON_ERROR,
  OUTCOMES,
  ROLES,
  STRATEGIES,
  VM_STATES,
  type Answer,
  type Capacity,
  type Preview,
  type DiskSpec,
  type NrdlBody,
  type NrdlDocument,
  type Offer,
  type Report,
  type StatusReport,
  type VmSpec,
} from "../../nrdl/types";

/** Plain objects (fast-check may build null-prototype ones, which toStrictEqual tells apart). */
function record<T>(
  model: { [K in keyof T]: fc.Arbitrary<T[K]> },
  options: { requiredKeys?: Array<keyof T> } = {},
): fc.Arbitrary<T> {
  return fc.record(model, { ...options, noNullPrototype: true } as never) as fc.Arbitrary<T>;
}

const name = fc.stringMatching(NAME_PATTERN);
const names = (min: number, max: number) => fc.uniqueArray(name, { minLength: min, maxLength: max });
const positive = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
const natural = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
// Any Unicode, including & < > " ' and astral characters; the codec drops control characters.
const text = (codec: typeof REASON, max: number) =>
  fc.string({ unit: "binary", minLength: 1, maxLength: max }).filter((s) => codec.accepts(s));
const reason = text(REASON, 40);
const uriChar = fc.constantFrom(..."abcXYZ019@.:;=?&%+-_~!#$'()*,/[]{}|^`\\");
const sipUri = fc
  .tuple(fc.constantFrom("sip:", "sips:"), fc.string({ unit: uriChar, minLength: 1, maxLength: 60 }))
  .map(([s, r]) => s + r);
const migrationUri = fc.oneof(
  fc.tuple(fc.ipV4(), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `tcp:${h}:${p}`),
  fc.tuple(fc.ipV6(), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `tcp:[${h}]:${p}`),
  fc.tuple(fc.domain(), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `tcp:${h}:${p}`),
);
const secret = fc.stringMatching(/^[A-Za-z0-9_-]{16,128}$/);
const nbdUri = fc
  .tuple(
    fc.oneof(
      fc.ipV4(),
      fc.ipV6().map((h) => `[${h}]`),
      fc.domain(),
    ),
    fc.integer({ min: 1, max: 65535 }),
    name,
  )
  .map(([h, p, e]) => `nbd://${h}:${p}/${e}`);
// copy-top is a qcow2 overlay with a backing image; the other modes have none.
const disk = (target: string): fc.Arbitrary<DiskSpec> =>
  fc.constantFrom(...DISK_MODES).chain((mode) =>
    mode === "copy-top"
      ? record({
          target: fc.constant(target),
          sizeBytes: positive,
          format: fc.constant("qcow2" as const),
          mode: fc.constant(mode),
          backingBytes: positive,
        })
      : (record({
          target: fc.constant(target),
          sizeBytes: positive,
          format: fc.constantFrom(...DISK_FORMATS),
          mode: fc.constant(mode),
        }) as fc.Arbitrary<DiskSpec>),
  );
const disks = names(0, 3).chain((targets) => fc.tuple(...targets.map(disk)));
const progress = fc.integer({ min: 0, max: 10000 }).map((n) => n / 10000);

const offer: fc.Arbitrary<Offer> = names(1, 8).chain((vmNames) =>
  record({
    kind: fc.constant("offer" as const),
    sourceUri: sipUri,
    destinationUri: sipUri,
    policy: fc.constantFrom(...STRATEGIES).chain((strategy) =>
      record({
        strategy: fc.constant(strategy),
        maxParallel: strategy === "sequential" ? fc.constant(1) : positive,
        bandwidthMbps: natural,
        downtimeLimitMs: positive,
        timeoutS: positive,
        onError: fc.constantFrom(...ON_ERROR),
        convergence: fc.constantFrom(...CONVERGENCE),
        commit: fc.constantFrom(...COMMITS),
        compress: fc.subarray([...COMPRESS_METHODS], { minLength: 1 }).map((m) => m.join(" ")),
        dedup: fc.constantFrom(...DEDUP_MODES),
      }),
    ),
    // Dependencies only point backwards, so the graph is acyclic.
    vms: fc.tuple(
      ...vmNames.map((vmName, i): fc.Arbitrary<VmSpec> =>
        record({
          name: fc.constant(vmName),
          hypervisor: fc.constantFrom(...HYPERVISORS),
          role: fc.constantFrom(...ROLES),
          memoryMib: positive,
          cpus: positive,
          dependsOn: fc.subarray(vmNames.slice(0, i)),
          disks,
        }),
      ),
    ),
  }),
);

/**
 * An armed VM's reduction: none, xbzrle, or a multifd method with its channels (SPEC.md 5.7);
 * dedup alone or with xbzrle, never with multifd (5.8).
 */
const reduction: fc.Arbitrary<Pick<Answer["armed"][number], "compress" | "channels" | "dedup">> = fc.oneof(
  fc.constant({}),
  fc.constant({ compress: "xbzrle" as const }),
  fc.record({ compress: fc.constantFrom("zstd" as const, "zlib" as const), channels: fc.integer({ min: 1, max: 16 }) }),
  fc.constant({ dedup: "on" as const }),
  fc.constant({ compress: "xbzrle" as const, dedup: "on" as const }),
);

const answer: fc.Arbitrary<Answer> = names(1, 8)
  .chain((vms) =>
    fc.integer({ min: 0, max: vms.length }).chain((split) =>
      record({
        kind: fc.constant("answer" as const),
        commit: fc.constantFrom(...COMMITS),
        armed: fc.tuple(
          ...vms.slice(0, split).map((vm) =>
            fc
              .tuple(
                record({
                  vm: fc.constant(vm),
                  uri: migrationUri,
                  secret,
                  exports: names(0, 3).chain((targets) =>
                    fc.tuple(...targets.map((t) => record({ disk: fc.constant(t), uri: nbdUri, secret }))),
                  ),
                }),
                reduction,
              )
              .map(([armed, r]) => ({ ...armed, ...r })),
          ),
        ),
        rejected: fc.tuple(...vms.slice(split).map((vm) => record({ vm: fc.constant(vm), reason }))),
      }),
    ),
  )
  .chain((a) =>
    // the dialog's index cap, exactly when some VM is armed with dedup (SPEC.md 5.8)
    a.armed.some((x) => x.dedup === "on") ? positive.map((dedupPages) => ({ ...a, dedupPages })) : fc.constant(a),
  );

const optionalStats = {
  transferredBytes: natural,
  totalMs: natural,
  downtimeMs: natural,
  reason,
};

const status: fc.Arbitrary<StatusReport> = names(1, 6).chain((vms) =>
  record({
    kind: fc.constant("status" as const),
    statuses: fc.tuple(
      ...vms.map((vm) =>
        record(
          {
            vm: fc.constant(vm),
            state: fc.constantFrom(...VM_STATES),
            progress,
            ...optionalStats,
            diskProgress: progress,
            diskTransferredBytes: natural,
            diskTotalBytes: natural,
          },
          { requiredKeys: ["vm", "state"] },
        ),
      ),
    ),
  }),
);

const report: fc.Arbitrary<Report> = names(1, 6).chain((vms) =>
  record(
    {
      kind: fc.constant("report" as const),
      outcome: fc.constantFrom(...OUTCOMES),
      groupDowntimeMs: natural,
      results: fc.tuple(
        ...vms.map((vm) =>
          record(
            {
              vm: fc.constant(vm),
              state: fc.constantFrom(...VM_STATES),
              host: text(HOST_TEXT, 30),
              ...optionalStats,
              diskTransferredBytes: natural,
            },
            { requiredKeys: ["vm", "state", "host"] },
          ),
        ),
      ),
    },
    { requiredKeys: ["kind", "outcome", "results"] },
  ),
);

const preview: fc.Arbitrary<Preview> = names(1, 8).chain((vms) =>
  fc.integer({ min: 0, max: vms.length }).chain((split) =>
    record({
      kind: fc.constant("preview" as const),
      accepted: fc.tuple(
        ...vms
          .slice(0, split)
          .map((vm) =>
            record(
              { vm: fc.constant(vm), uri: migrationUri, dedup: fc.constant("on" as const) },
              { requiredKeys: ["vm", "uri"] },
            ),
          ),
      ),
      rejected: fc.tuple(...vms.slice(split).map((vm) => record({ vm: fc.constant(vm), reason }))),
    }),
  ),
);

const capacity: fc.Arbitrary<Capacity> = record({
  kind: fc.constant("capacity" as const),
  host: text(HOST_TEXT, 30),
  memoryFreeMib: natural,
  diskFreeMib: natural,
  portsFree: natural,
  vmsReceivable: natural,
  hypervisors: fc.subarray([...HYPERVISORS]).map((h) => h.join(" ")),
  versions: fc.constant("1"),
});

const recover = record({ kind: fc.constant("recover" as const), vm: name });
const recovery = record({ kind: fc.constant("recovery" as const), vm: name, uri: migrationUri, secret });

const switchover = record({ kind: fc.constant("switchover" as const) });
const groupAbort = record({ kind: fc.constant("abort" as const), reason });
const decision = record(
  {
    kind: fc.constant("decision" as const),
    outcome: fc.constantFrom(...DECISION_OUTCOMES),
    reason,
    returned: names(1, 3).map((n) => n.join(" ")),
  },
  { requiredKeys: ["kind", "outcome"] },
);
const decisionQuery = record({ kind: fc.constant("decision-query" as const) });

export const BODIES: Record<NrdlBody["kind"], fc.Arbitrary<NrdlBody>> = {
  offer,
  answer,
  status,
  report,
  preview,
  capacity,
  recover,
  recovery,
  switchover,
  abort: groupAbort,
  decision,
  "decision-query": decisionQuery,
};

/** Any version from the lowest that can say the body to the newest. */
export function documentOf<B extends NrdlBody>(body: fc.Arbitrary<B>): fc.Arbitrary<NrdlDocument<B>> {
  return body.chain((b) =>
    record({ version: fc.integer({ min: minimumVersion(b), max: NRDL_VERSION }), id: name, body: fc.constant(b) }),
  );
}
