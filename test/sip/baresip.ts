/**
 * baresip (Debian package) as the softphone on an operator's desk, headless: a generated config
 * dir in a temp folder, accounts registered through the tests' Kamailio, no sound device (a sine
 * source, no player), loopback only. Driven like a person at its keyboard, through its stdio
 * module: commands on stdin ("/message TEXT" to the current contact, "/dial URI"), and what it
 * shows (incoming MESSAGEs, call ends, registrations) read from stdout.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { randomPort } from "../../bench/sipp";

export interface Softphone {
  /** One command line, e.g. "/message migrate exp2 to sip:dc2@teleport.test". */
  type(command: string): void;
  /** Resolves with the first match of `pattern` in what it printed (from `from` on), or rejects after `ms`. */
  waitFor(pattern: RegExp, ms?: number, from?: number): Promise<RegExpMatchArray>;
  output(): string;
  stop(): Promise<void>;
}

export interface SoftphoneOptions {
  /** Scratch folder for its config dir. */
  dir: string;
  /** Accounts as user -> password, all at `domain`; the first is the one in use. */
  accounts: Record<string, string>;
  domain: string;
  /** The Kamailio every request goes through. */
  proxyPort: number;
  /** Its contacts; the first is the current one, which "/message" writes to. */
  contacts: string[];
}

export async function startSoftphone(o: SoftphoneOptions): Promise<Softphone> {
  if (!fs.existsSync("/usr/bin/baresip"))
    throw new Error("baresip is missing: apt-get install -y baresip (scripts/bootstrap.sh installs it)");
  const conf = fs.mkdtempSync(path.join(o.dir, "baresip-"));
  fs.writeFileSync(
    path.join(conf, "config"),
    [
      "poll_method epoll",
      `sip_listen 127.0.0.1:${randomPort()}`,
      "module_path /usr/lib/baresip/modules",
      "module stdio.so",
      "module g711.so",
      "module ausine.so",
      "module_app account.so",
      "module_app contact.so",
      "module_app menu.so",
      "audio_source ausine,440",
      "",
    ].join("\n"),
  );
  fs.writeFileSync(
    path.join(conf, "accounts"),
    Object.entries(o.accounts)
      .map(
        ([user, pass]) =>
          `<sip:${user}@${o.domain}>;auth_pass=${pass};outbound="sip:127.0.0.1:${o.proxyPort}";regint=60`,
      )
      .join("\n") + "\n",
  );
  fs.writeFileSync(path.join(conf, "contacts"), o.contacts.map((c) => `<${c}>`).join("\n") + "\n");
  // -n 127.0.0.1: no other address in its Contact or SDP
  const child = spawn("baresip", ["-f", conf, "-n", "127.0.0.1"], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  const waiters = new Set<() => void>();
  const keep = (d: Buffer) => {
    out += d.toString();
    for (const w of waiters) w();
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  let gone = false;
  const exited = new Promise<void>((r) =>
    child.once("exit", () => {
      gone = true;
      for (const w of waiters) w();
      r();
    }),
  );
  const phone: Softphone = {
    type: (command) => void child.stdin.write(command + "\n"),
    output: () => out,
    waitFor: (pattern, ms = 15_000, from = 0) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const m = out.slice(from).match(pattern);
          if (m || gone) done();
          if (m) resolve(m);
          else if (gone) reject(new Error(`baresip exited before showing ${pattern}; it showed:\n${out}`));
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`baresip did not show ${pattern} within ${ms} ms; it showed:\n${out}`));
        }, ms);
        const done = () => (clearTimeout(timer), waiters.delete(check));
        waiters.add(check);
        check();
      }),
    stop: async () => {
      child.stdin.write("/quit\n");
      const killer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(killer);
      fs.rmSync(conf, { recursive: true, force: true });
    },
  };
  const n = Object.keys(o.accounts).length;
  await phone.waitFor(new RegExp(`All ${n} useragents? registered successfully`));
  return phone;
}
