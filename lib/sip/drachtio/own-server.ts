/**
 * A drachtio backend that brings its own drachtio-server (tests, `demo --backend drachtio`,
 * benchmarks): the server is started on the agent's configured SIP address and port before the
 * agent connects, and stopped with it. Operators attach to a server they run (docs/operators.md).
 */
import { DrachtioBackend, type DrachtioSipConfig } from "../drachtio-backend";
import type { SipConfig } from "../config";
import { startDrachtioServer, type DrachtioServer } from "./server-process";

export class DrachtioWithOwnServer extends DrachtioBackend {
  private server?: DrachtioServer;

  constructor(config: SipConfig) {
    // the connection is filled in by start(), once the server runs
    super({ ...config, drachtio: { host: "127.0.0.1", port: 0, secret: "" } } as DrachtioSipConfig);
  }

  /** The server this backend started (for tests that restart or kill it). */
  get ownServer(): DrachtioServer | undefined {
    return this.server;
  }

  override async start(): Promise<void> {
    const listen = this.config.listen[0];
    const transports = this.config.listen.map((l) => l.transport).filter((t) => t === "udp" || t === "tcp");
    this.server = await startDrachtioServer({
      address: listen?.host === "0.0.0.0" || !listen ? "127.0.0.1" : listen.host,
      sipPort: listen?.port || undefined,
      transports: transports.length ? [...new Set([...transports, "udp" as const, "tcp" as const])] : undefined,
    });
    this.config.drachtio = { host: this.server.address, port: this.server.adminPort, secret: this.server.secret };
    await super.start();
    if (this.listeners.length === 0)
      this.listeners = (transports.length ? transports : (["udp"] as const)).map((transport) => ({
        transport,
        host: this.server?.address ?? "127.0.0.1",
        port: this.server?.sipPort ?? 0,
        advertise: this.server?.address ?? "127.0.0.1",
      }));
  }

  override async stop(): Promise<void> {
    await super.stop();
    await this.server?.stop();
    this.server = undefined;
  }
}
