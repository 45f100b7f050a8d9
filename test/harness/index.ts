/** The one test harness: agent pairs (pair.ts) on a chosen SIP backend (backends.ts) and driver (drivers.ts). */
export * from "./backends";
export * from "./drivers";
export * from "./pair";
export * from "./hosts";
export * from "./writer";
export * from "./drachtio";
