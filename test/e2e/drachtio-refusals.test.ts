/**
 * The contract of two backends: refusals.test.ts (the refusals 400/403/415/486/488, CANCEL while
 * arming, digest) again, unchanged, with both agents as drachtio-srf apps, each on its own
 * drachtio-server. Any suite runs so: SIP_TELEPORT_TEST_BACKEND=drachtio.
 */
import { onDrachtio } from "../harness/drachtio";

// eslint-disable-next-line @typescript-eslint/no-require-imports -- the suite registers its tests when loaded
onDrachtio("refusals.test.ts", () => require("./refusals.test"));
