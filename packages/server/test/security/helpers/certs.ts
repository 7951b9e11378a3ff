import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** A private key and its certificate, as file paths and as PEM text. */
export interface KeyPair {
  readonly keyPath: string;
  readonly certPath: string;
  readonly key: string;
  readonly cert: string;
}

/** Every certificate the TLS tests need, made fresh by `openssl` in a temp dir. */
export interface TestCerts {
  /** The private CA that signs `server`, `client`, `expired`, `wrongHost` and `untrustedClient`. */
  readonly ca: KeyPair;
  /** A server certificate for 127.0.0.1 and localhost, signed by `ca`. */
  readonly server: KeyPair;
  /** A client certificate (CN=alice) for mutual TLS, signed by `ca`. */
  readonly client: KeyPair;
  /** A self-signed server certificate for 127.0.0.1 and localhost: no CA vouches for it. */
  readonly selfSigned: KeyPair;
  /** A server certificate for 127.0.0.1 and localhost, signed by `ca`, valid only in January 2020. */
  readonly expired: KeyPair;
  /** A server certificate signed by `ca` for another host (example.com) only. */
  readonly wrongHost: KeyPair;
  /** A client certificate (CN=mallory) signed by its own CA, which the server does not trust. */
  readonly untrustedClient: KeyPair;
}

const SERVER_EXT = [
  "basicConstraints=critical,CA:FALSE",
  "keyUsage=critical,digitalSignature",
  "extendedKeyUsage=serverAuth",
  "subjectAltName=DNS:localhost,IP:127.0.0.1",
].join("\n");

const CLIENT_EXT = [
  "basicConstraints=critical,CA:FALSE",
  "keyUsage=critical,digitalSignature",
  "extendedKeyUsage=clientAuth",
].join("\n");

const WRONG_HOST_EXT = [
  "basicConstraints=critical,CA:FALSE",
  "keyUsage=critical,digitalSignature",
  "extendedKeyUsage=serverAuth",
  "subjectAltName=DNS:example.com",
].join("\n");

const CA_EXT = [
  "basicConstraints=critical,CA:TRUE",
  "keyUsage=critical,keyCertSign,cRLSign",
  "subjectKeyIdentifier=hash",
].join("\n");

/**
 * Makes a CA, server, client, self-signed, expired and wrong-host certificates in `dir`.
 *
 * The expired one uses `openssl ca -startdate/-enddate` with dates in 2020: OpenSSL 3.0
 * has no `x509 -not_after` (3.4+), and `req -x509 -days 0` would only expire by the clock.
 */
export function makeTestCerts(dir: string): TestCerts {
  const openssl = (...args: string[]) =>
    execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    return name;
  };
  const pair = (name: string): KeyPair => {
    const keyPath = join(dir, `${name}.key`);
    const certPath = join(dir, `${name}.crt`);
    return {
      keyPath,
      certPath,
      key: readFileSync(keyPath, "utf8"),
      cert: readFileSync(certPath, "utf8"),
    };
  };
  // EC P-256 keys: fast to generate, accepted at every OpenSSL security level.
  const newKey = (name: string) =>
    openssl(
      "genpkey",
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-out",
      `${name}.key`,
    );
  const selfSign = (name: string, subject: string, ext: string) => {
    newKey(name);
    openssl(
      "req",
      "-x509",
      "-new",
      "-key",
      `${name}.key`,
      "-subj",
      subject,
      "-days",
      "2",
      "-sha256",
      // `req` in OpenSSL 3.0 takes extensions from its config file only (no -extfile).
      "-config",
      file(
        `${name}.cnf`,
        `[req]\ndistinguished_name=dn\nx509_extensions=ext\n[dn]\n[ext]\n${ext}\n`,
      ),
      "-out",
      `${name}.crt`,
    );
  };
  const csr = (name: string, subject: string) => {
    newKey(name);
    openssl("req", "-new", "-key", `${name}.key`, "-subj", subject, "-out", `${name}.csr`);
  };
  const sign = (name: string, ca: string, ext: string) =>
    openssl(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${ca}.crt`,
      "-CAkey",
      `${ca}.key`,
      "-CAcreateserial",
      "-days",
      "2",
      "-sha256",
      "-extfile",
      file(`${name}.ext`, ext),
      "-out",
      `${name}.crt`,
    );

  selfSign("ca", "/CN=ezipc test CA", CA_EXT);
  csr("server", "/CN=localhost");
  sign("server", "ca", SERVER_EXT);
  csr("client", "/CN=alice/O=ezipc tests");
  sign("client", "ca", CLIENT_EXT);
  selfSign("selfSigned", "/CN=localhost", SERVER_EXT);
  csr("wrongHost", "/CN=example.com");
  sign("wrongHost", "ca", WRONG_HOST_EXT);
  selfSign("otherCa", "/CN=some other CA", CA_EXT);
  csr("untrustedClient", "/CN=mallory");
  sign("untrustedClient", "otherCa", CLIENT_EXT);

  // Expired: `openssl ca` takes explicit validity dates, here both in the past.
  mkdirSync(join(dir, "ca-db"));
  file("ca-db/index.txt", "");
  file("ca-db/serial", "1000\n");
  file(
    "ca.cnf",
    [
      "[ca]",
      "default_ca=test_ca",
      "[test_ca]",
      "database=ca-db/index.txt",
      "new_certs_dir=ca-db",
      "serial=ca-db/serial",
      "default_md=sha256",
      "policy=any",
      "unique_subject=no",
      "[any]",
      "commonName=supplied",
      "",
    ].join("\n"),
  );
  csr("expired", "/CN=localhost");
  openssl(
    "ca",
    "-batch",
    "-notext",
    "-config",
    "ca.cnf",
    "-cert",
    "ca.crt",
    "-keyfile",
    "ca.key",
    "-in",
    "expired.csr",
    "-startdate",
    "20200101000000Z",
    "-enddate",
    "20200102000000Z",
    "-extfile",
    file("expired.ext", SERVER_EXT),
    "-out",
    "expired.crt",
  );

  return {
    ca: pair("ca"),
    server: pair("server"),
    client: pair("client"),
    selfSigned: pair("selfSigned"),
    expired: pair("expired"),
    wrongHost: pair("wrongHost"),
    untrustedClient: pair("untrustedClient"),
  };
}
