/** The test guest's memory patterns (st.fill, lib/guest/build-guest.sh) as the dedup tests read them. */
import fs from "node:fs";
import type { QemuDriver } from "../../lib/hypervisor/qemu";

/** The SUM of the first line of `kind` ("FILL" or "FILL-CHECK") this VM printed on its console. */
export async function fillSum(driver: QemuDriver, vm: string, kind: string, timeoutMs = 30_000): Promise<string> {
  const re = new RegExp(`${kind} ${vm} ([0-9a-f]{32})`); // after the console's prompt, on the same line
  let log = "";
  for (const end = Date.now() + timeoutMs; Date.now() < end; await new Promise((r) => setTimeout(r, 200))) {
    log = fs.existsSync(driver.files(vm).serial) ? fs.readFileSync(driver.files(vm).serial, "utf8") : "";
    const m = re.exec(log);
    if (m) return m[1];
  }
  throw new Error(`no ${kind} line of ${vm} within ${timeoutMs} ms: ${log.slice(-300)}`);
}
