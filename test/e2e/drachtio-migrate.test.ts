/**
 * The contract of two backends: migrate.test.ts (exp1/exp2/exp3 moves) again, unchanged, with both agents as
 * drachtio-srf apps, each on its own drachtio-server. Any suite runs so: SIP_TELEPORT_TEST_BACKEND=drachtio.
 */
import { onDrachtio } from "../harness/drachtio";

// eslint-disable-next-line @typescript-eslint/no-require-imports -- the suite registers its tests when loaded
onDrachtio("migrate.test.ts", () => require("./migrate.test"));
