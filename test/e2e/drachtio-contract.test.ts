/**
 * One contract, two backends: the agent end-to-end suites of this folder (exp1/exp2/exp3, the
 * refusals 400/403/415/486/488, CANCEL while arming, digest, Kamailio-routed, kill cases) run
 * here again, unchanged, with both agents as drachtio-srf apps, each on its own drachtio-server
 * (../shared/drachtio/bin); agents run as their own processes attach to the same servers.
 * The same switch runs any suite on drachtio: SIP_TELEPORT_TEST_BACKEND=drachtio npx jest ...
 */
import { describeDrachtio, drachtioUnavailable } from "../harness/drachtio";

process.env.SIP_TELEPORT_TEST_BACKEND = "drachtio";

if (drachtioUnavailable() === undefined) {
  /* eslint-disable @typescript-eslint/no-require-imports -- the suites register their tests when loaded */
  require("./migrate.test");
  require("./refusals.test");
  require("./kamailio.test");
  require("./faults.test");
  /* eslint-enable @typescript-eslint/no-require-imports */
} else describeDrachtio("the e2e suites on drachtio", () => test("need a drachtio-server", () => undefined));
