/** Certificates for the TLS tests, made by openssl at test time: self-signed, or a CA and certificates it signs. */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const openssl = (args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });

/** A self-signed certificate (also a CA) and its key, as files `<name>.pem` and `<name>.key` in `dir`. */
export function selfSigned(dir: string, name: string, cn: string, san?: string): { cert: string; key: string } {
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.pem`);
  const ext = san ? ["-addext", `subjectAltName=${san}`] : [];
  openssl(
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", `/CN=${cn}`, ...ext].concat([
      "-keyout",
      key,
      "-out",
      cert,
    ]),
  );
  return { cert, key };
}

/** A CA (ca.pem) and, per name, a key and a certificate it signed for the given subjectAltName. */
export function makeCa(
  dir: string,
  label: string,
): { ca: string; issue(name: string, san: string): { cert: string; key: string } } {
  const { cert: ca, key: caKey } = selfSigned(dir, `${label}-ca`, `${label} test CA`);
  return {
    ca,
    issue(name, san) {
      const key = path.join(dir, `${label}-${name}.key`);
      const csr = path.join(dir, `${label}-${name}.csr`);
      const cert = path.join(dir, `${label}-${name}.pem`);
      const ext = path.join(dir, `${label}-${name}.ext`);
      fs.writeFileSync(ext, `subjectAltName=${san}\n`);
      openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${name}`, "-keyout", key, "-out", csr]);
      openssl([
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        caKey,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        ext,
        "-out",
        cert,
      ]);
      return { cert, key };
    },
  };
}
