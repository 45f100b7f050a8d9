/** dc1 and dc2 with the thesis' experiment 2 group (router1, video) defined on both, dist/ built for CLI runs. */
import { ensureBuilt } from "../e2e/cli-process";
import { guestDefs, startPair, type Pair, type PairOptions } from "../harness";

export async function exp2Pair(opts: PairOptions = {}): Promise<Pair> {
  ensureBuilt();
  const defs = await guestDefs([
    ["router1", "router"],
    ["video", "server"],
  ]);
  return startPair(defs, opts);
}
