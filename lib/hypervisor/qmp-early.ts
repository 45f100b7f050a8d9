/**
 * The QMP connection of a QEMU that is starting. QEMU binds its monitor socket early in its
 * start and greets once its main loop runs, which is a few ms (more on a busy host) before its
 * daemonizing parent has exited and been reaped. Connecting as soon as the socket appears
 * (inotify, no polling) overlaps the two; when that does not work (the socket bound but not
 * listening yet, no inotify), the caller connects the usual way once QEMU has started.
 */
import fs from "node:fs";
import path from "node:path";
import { QmpClient, type QmpConnectOptions } from "./qmp";

export interface EarlyQmp {
  /** The connection, once QEMU has greeted; never settles when the early attempt fails. */
  connected: Promise<QmpClient>;
  /**
   * Stop waiting for the socket. `keep`: QEMU started, so the connection (if one was begun)
   * is wanted: resolves with it, or undefined. Not `keep`: whatever connects is closed, unwaited.
   */
  finish(keep: boolean): Promise<QmpClient | undefined>;
}

export function connectOnCreate(socketPath: string, opts: QmpConnectOptions = {}): EarlyQmp {
  const name = path.basename(socketPath);
  let attempt: Promise<QmpClient | undefined> | undefined;
  let greeted!: (client: QmpClient) => void;
  const connected = new Promise<QmpClient>((resolve) => (greeted = resolve));
  let watcher: fs.FSWatcher | undefined;
  const unwatch = () => {
    watcher?.close();
    watcher = undefined;
  };
  const begin = () => {
    if (attempt) return;
    unwatch();
    attempt = QmpClient.connect(socketPath, opts).then(
      (client) => (greeted(client), client),
      () => undefined,
    );
  };
  try {
    watcher = fs.watch(path.dirname(socketPath), (_event, file) => {
      if (file === name) begin();
    });
    watcher.on("error", unwatch);
    if (fs.existsSync(socketPath)) begin(); // created before the watch began
  } catch {
    unwatch(); // no inotify here: the caller connects once QEMU has started
  }
  return {
    connected,
    async finish(keep) {
      unwatch();
      if (keep) return attempt;
      void attempt?.then((client) => client?.close()); // a QEMU that failed to start: not waited for
      return undefined;
    },
  };
}
