import { Writable } from "node:stream";
import winston from "winston";
import { createLogger, maskSecrets } from "../../lib/log/logger";

describe("logger never writes secrets", () => {
  it("masks digest credentials and NRDL secrets in text", () => {
    const trace =
      'INVITE sip:a SIP/2.0\r\nAuthorization: Digest username="dc1", response="abc"\r\n\r\n<armed ' +
      'vm="r1" uri="tcp:1.2.3.4:5" secret="s3cr3t"/>';
    const masked = maskSecrets(trace);
    expect(masked).not.toContain("abc");
    expect(masked).not.toContain("s3cr3t");
    expect(masked).toContain("Authorization: Digest <masked>");
    expect(masked).toContain('vm="r1"');
  });

  it("masks secret-named fields in structured log entries", () => {
    const lines: string[] = [];
    const logger = createLogger({ format: "json" });
    logger.clear();
    logger.add(
      new winston.transports.Stream({
        stream: new Writable({
          write(chunk, _e, cb) {
            lines.push(String(chunk));
            cb();
          },
        }),
      }),
    );
    logger.info("armed", { vm: "router1", secret: "topsecret", nested: { password: "pw1", port: 4444 } });
    const out = lines.join("");
    expect(out).toContain("router1");
    expect(out).toContain("4444");
    expect(out).not.toContain("topsecret");
    expect(out).not.toContain("pw1");
  });
});
