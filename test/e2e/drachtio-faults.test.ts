/**
 * The contract of two backends: faults.test.ts (the kill cases) again, unchanged, with both agents as
 * drachtio-srf apps, each on its own drachtio-server. Any suite runs so: SIP_TELEPORT_TEST_BACKEND=drachtio.
 */
import { onDrachtio } from "../harness/drachtio";

// eslint-disable-next-line @typescript-eslint/no-require-imports -- the suite registers its tests when loaded
onDrachtio("faults.test.ts", () => require("./faults.test"));
