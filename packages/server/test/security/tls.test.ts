// TLS over real sockets, with certificates made by `openssl` for this run: a CA-trusted
// round trip, mutual TLS, every way a server certificate can be wrong, plaintext ↔ TLS
// mismatches failing fast with errors that say so, TLS with an authKey, and the TLS ≥ 1.2
// floor.
import { connect as tlsConnect } from "node:tls";
import {
  AuthenticationError,
  ConnectionClosedError,
  connect,
  createServer,
  defineContract,
  ErrorCodes,
  method,
  ProtocolError,
  RpcError,
  type Server,
  type ServerOptions,
} from "ezipc";
import { afterAll, beforeAll, describe, expect } from "vitest";
import { z } from "zod";
import { makeTestCerts, type TestCerts } from "./helpers/certs.js";
import { Cleanups, ErrorLog, isError, it, within } from "./helpers/cleanup.js";

const contract = defineContract({
  server: {
    echo: method({ params: z.object({ text: z.string() }), result: z.string() }),
    whoami: method({
      result: z.object({
        transport: z.string(),
        authenticated: z.boolean(),
        cn: z.string().nullable(),
      }),
    }),
  },
});

const KEY = "tls-and-a-key";

let certs: TestCerts;
const shared = new Cleanups();
beforeAll(() => {
  certs = makeTestCerts(shared.tempDir("ezipc-certs-"));
});
afterAll(() => shared.run());

interface Harness {
  server: Server;
  errors: ErrorLog;
  /** The `host:port` the server listens on. */
  port: number;
}

async function start(
  cleanups: Cleanups,
  options: ServerOptions,
  scheme: "tls" | "tcp" = "tls",
): Promise<Harness> {
  const errors = new ErrorLog();
  const server = createServer(
    contract,
    {
      echo: ({ text }) => text,
      whoami: (_params, ctx) => ({
        transport: ctx.connection.transport,
        authenticated: ctx.connection.authenticated,
        cn: ctx.connection.peerCertificate?.subject.CN ?? null,
      }),
    },
    { handshakeTimeout: 5_000, ...options, onError: errors.hook },
  );
  cleanups.add(server, (s) => within(s.close({ timeout: 1_000 }), 2_000, "server.close()"));
  await server.listen(`${scheme}://127.0.0.1:0`);
  const port = Number(/:(\d+)$/.exec(server.address)![1]);
  return { server, errors, port };
}

/** The server's own certificate and key (signed by the test CA), as file paths. */
function serverTls(
  extra: Partial<NonNullable<ServerOptions["tls"]>> = {},
): NonNullable<ServerOptions["tls"]> {
  return { key: certs.server.keyPath, cert: certs.server.certPath, ...extra };
}

/** Resolves once the server holds no connection (each one's 'disconnect' was emitted). */
async function noConnections(server: Server): Promise<void> {
  while (server.connections.length > 0) {
    await new Promise((resolve) => server.once("disconnect", resolve));
  }
}

/**
 * What a client gets from `connect` plus its first call: the error, whichever of the two
 * failed. (With TLS 1.3 the client finishes its handshake before the server has checked
 * the client's certificate, so a refusal can arrive after `connect` resolved.)
 */
async function firstFailure(
  cleanups: Cleanups,
  open: () => ReturnType<typeof connect<typeof contract.server, typeof contract.client>>,
): Promise<unknown> {
  try {
    const client = await open();
    cleanups.add(client, (c) => c.close());
    await client.call("echo", { text: "should not be served" });
  } catch (error) {
    return error;
  }
  throw new Error("expected the connection to be refused, but the call succeeded");
}

describe("tls:// with a CA-trusted server certificate", () => {
  it("round trip: the client verifies the server against the CA (by IP and by host name)", async ({
    cleanups,
  }) => {
    const { server, port } = await start(cleanups, { tls: serverTls() });
    // By IP, with the CA as a path.
    const byIp = await connect(contract, server.address, { tls: { ca: certs.ca.certPath } });
    cleanups.add(byIp, (c) => c.close());
    expect(await byIp.call("echo", { text: "over TLS" })).toBe("over TLS");
    expect(await byIp.call("whoami")).toStrictEqual({
      transport: "tls",
      authenticated: false,
      cn: null,
    });
    expect(byIp.connection.peerCertificate?.subject.CN).toBe("localhost");
    expect(byIp.connection.peerCertificate?.issuer.CN).toBe("ezipc test CA");
    // By name (verified against DNS:localhost), with the CA as PEM contents.
    const byName = await connect(contract, `tls://localhost:${port}`, {
      tls: { ca: certs.ca.cert },
    });
    cleanups.add(byName, (c) => c.close());
    expect(await byName.call("echo", { text: "by name" })).toBe("by name");
    expect(server.connections.map((c) => c.transport)).toStrictEqual(["tls", "tls"]);
  });

  it("the server's key and certificate may be given as PEM contents too", async ({ cleanups }) => {
    const { server } = await start(cleanups, {
      tls: { key: certs.server.key, cert: certs.server.cert },
    });
    const client = await connect(contract, server.address, { tls: { ca: certs.ca.cert } });
    cleanups.add(client, (c) => c.close());
    expect(await client.call("echo", { text: "pem" })).toBe("pem");
  });
});

describe("mutual TLS", () => {
  const mtls = () => serverTls({ ca: certs.ca.certPath, requestClientCertificate: true });

  it("the client's certificate subject is on ctx.connection.peerCertificate", async ({
    cleanups,
  }) => {
    const { server, errors } = await start(cleanups, { tls: mtls() });
    const client = await connect(contract, server.address, {
      tls: { ca: certs.ca.certPath, key: certs.client.keyPath, cert: certs.client.certPath },
    });
    cleanups.add(client, (c) => c.close());
    const result = await client.call("whoami").catch((e: unknown) => e);
    // The server has nothing to complain about a certificate signed by the CA it trusts.
    expect(errors.errors.map(describeChain)).toStrictEqual([]);
    expect(result).toStrictEqual({
      transport: "tls",
      authenticated: false,
      cn: "alice",
    });
    const [connection] = server.connections;
    expect(connection?.peerCertificate?.subject).toMatchObject({ CN: "alice", O: "ezipc tests" });
    expect(connection?.peerCertificate?.issuer.CN).toBe("ezipc test CA");
    expect(connection?.peerCertificate?.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  });

  it("a client without a certificate is refused, and holds no connection", async ({ cleanups }) => {
    const { server, errors } = await start(cleanups, { tls: mtls() });
    const error = await firstFailure(cleanups, () =>
      connect(contract, server.address, { tls: { ca: certs.ca.certPath } }),
    );
    // Refused during the TLS handshake (AuthenticationError from connect) or right after it
    // (TLS 1.3: the first call sees the close); either way the cause names the certificate.
    expect(error instanceof AuthenticationError || error instanceof ConnectionClosedError).toBe(
      true,
    );
    expect(describeChain(error)).toMatch(/certificate/i);
    await errors.next((e) => /certificate/i.test(describeChain(e)));
    await noConnections(server);
  });

  it("a client certificate from another CA is refused", async ({ cleanups }) => {
    const { server, errors } = await start(cleanups, { tls: mtls() });
    const error = await firstFailure(cleanups, () =>
      connect(contract, server.address, {
        tls: {
          ca: certs.ca.certPath,
          key: certs.untrustedClient.keyPath,
          cert: certs.untrustedClient.certPath,
        },
      }),
    );
    expect(error instanceof AuthenticationError || error instanceof ConnectionClosedError).toBe(
      true,
    );
    // The client learns only that the server closed (TLS 1.3 has no alert left to send once
    // the handshake is done); the server's report names the verification failure.
    const reported = await errors.next((e) => /certificate/i.test(describeChain(e)));
    expect(describeChain(reported)).toMatch(
      /UNABLE_TO_GET_ISSUER_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to get (local )?issuer certificate/i,
    );
    await noConnections(server);
  });
});

describe("a bad server certificate is rejected by the client with AuthenticationError", () => {
  it.for([
    ["self-signed", () => certs.selfSigned, /self[- ]signed/i],
    ["expired", () => certs.expired, /expired/i],
    ["for the wrong host", () => certs.wrongHost, /does not match certificate's altnames/i],
  ] as const)("%s", async ([, pair, cause], { cleanups }) => {
    const { key, cert } = pair();
    const { server } = await start(cleanups, { tls: { key, cert } });
    const error = await connect(contract, server.address, {
      tls: { ca: certs.ca.certPath },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as Error).message).toMatch(cause);
    expect((error as Error).message).toContain(server.address);
    await noConnections(server);
  });

  it("a self-signed certificate is rejected against the system roots too (no ca given)", async ({
    cleanups,
  }) => {
    const { server } = await start(cleanups, {
      tls: { key: certs.selfSigned.keyPath, cert: certs.selfSigned.certPath },
    });
    await expect(connect(contract, server.address)).rejects.toSatisfy(
      (error) => error instanceof AuthenticationError && /self[- ]signed/i.test(error.message),
    );
  });

  it("a certificate for the wrong host is rejected when connecting by name as well", async ({
    cleanups,
  }) => {
    const { port } = await start(cleanups, {
      tls: { key: certs.wrongHost.keyPath, cert: certs.wrongHost.certPath },
    });
    await expect(
      connect(contract, `tls://localhost:${port}`, { tls: { ca: certs.ca.certPath } }),
    ).rejects.toSatisfy(
      (error) =>
        error instanceof AuthenticationError &&
        /localhost.*example\.com|altnames/i.test(error.message),
    );
  });
});

describe("plaintext and TLS mismatches fail fast, saying so", () => {
  it("a plaintext client → TLS server: ConnectionClosedError saying TLS is required", async ({
    cleanups,
  }) => {
    const { errors, port } = await start(cleanups, { tls: serverTls() });
    const client = await connect(contract, `tcp://127.0.0.1:${port}`);
    cleanups.add(client, (c) => c.close());
    const error = await client.call("echo", { text: "plain" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionClosedError);
    expect((error as Error).message).toMatch(/requires TLS.*tls:\/\//);
    // The refusal came from the server as a frame with its code.
    expect((error as Error).cause).toBeInstanceOf(RpcError);
    expect(((error as Error).cause as RpcError).code).toBe(ErrorCodes.ProtocolMismatch);
    await errors.next(isError(ProtocolError, /plaintext client/));
  });

  it("a TLS client → plaintext server: AuthenticationError saying it is not a TLS server", async ({
    cleanups,
  }) => {
    const { server, port, errors } = await start(cleanups, {}, "tcp");
    const error = await connect(contract, `tls://127.0.0.1:${port}`, {
      tls: { ca: certs.ca.certPath },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as Error).message).toMatch(/does not speak TLS|plain tcp:\/\/ server/);
    // The server recognised the ClientHello and said so locally.
    await errors.next(isError(ProtocolError, /TLS ClientHello/));
    await noConnections(server);
  });

  it("a TLS client → plaintext server with an authKey (which speaks first): AuthenticationError saying so", async ({
    cleanups,
  }) => {
    const { port } = await start(cleanups, { authKey: KEY }, "tcp");
    await expect(
      connect(contract, `tls://127.0.0.1:${port}`, { tls: { ca: certs.ca.certPath } }),
    ).rejects.toSatisfy(
      (error) =>
        error instanceof AuthenticationError &&
        /does not speak TLS|plain tcp:\/\/ server/.test(error.message),
    );
  });
});

describe("TLS and an authKey together", () => {
  it("both must pass: the handler sees an authenticated tls connection", async ({ cleanups }) => {
    const { server } = await start(cleanups, { tls: serverTls(), authKey: KEY });
    const client = await connect(contract, server.address, {
      tls: { ca: certs.ca.certPath },
      authKey: KEY,
    });
    cleanups.add(client, (c) => c.close());
    expect(await client.call("whoami")).toStrictEqual({
      transport: "tls",
      authenticated: true,
      cn: null,
    });
    expect(server.connections.map((c) => c.authenticated)).toStrictEqual([true]);
  });

  it("a wrong key over a good TLS connection is refused on both sides", async ({ cleanups }) => {
    const { server, errors } = await start(cleanups, { tls: serverTls(), authKey: KEY });
    await expect(
      connect(contract, server.address, { tls: { ca: certs.ca.certPath }, authKey: "wrong" }),
    ).rejects.toBeInstanceOf(AuthenticationError);
    await errors.next(isError(AuthenticationError, /key does not match/));
    expect(server.connections).toHaveLength(0);
  });

  it("a TLS client without the key gets ConnectionClosedError caused by AuthenticationError", async ({
    cleanups,
  }) => {
    const { server } = await start(cleanups, { tls: serverTls(), authKey: KEY });
    const error = await firstFailure(cleanups, () =>
      connect(contract, server.address, { tls: { ca: certs.ca.certPath } }),
    );
    expect(error).toBeInstanceOf(ConnectionClosedError);
    expect((error as Error).cause).toBeInstanceOf(AuthenticationError);
    expect(((error as Error).cause as Error).message).toMatch(/requires authentication/);
  });
});

describe("minimum TLS version", () => {
  /** A raw Node TLS client with the given version range; resolves with its outcome. */
  function rawTls(
    cleanups: Cleanups,
    port: number,
    versions: { minVersion: "TLSv1.1" | "TLSv1.2"; maxVersion: "TLSv1.1" | "TLSv1.2" },
  ): Promise<{ ok: true; protocol: string | null } | { ok: false; error: NodeJS.ErrnoException }> {
    return new Promise((resolve) => {
      const socket = tlsConnect({
        host: "127.0.0.1",
        port,
        ca: certs.ca.cert,
        ...versions,
        // OpenSSL 3 refuses to offer TLS 1.1 at its default security level: level 0 lets
        // this client offer it, so that the refusal tested is the server's.
        ciphers: "DEFAULT@SECLEVEL=0",
      });
      cleanups.add(socket, (s) => s.destroy());
      socket.once("secureConnect", () => resolve({ ok: true, protocol: socket.getProtocol() }));
      socket.once("error", (error) => resolve({ ok: false, error }));
    });
  }

  it("TLSv1.2 is the default floor: a client forcing TLSv1.1 is refused, TLSv1.2 is accepted", async ({
    cleanups,
  }) => {
    const { server, port, errors } = await start(cleanups, { tls: serverTls() });
    const old = await rawTls(cleanups, port, { minVersion: "TLSv1.1", maxVersion: "TLSv1.1" });
    // With security level 0, this Node's OpenSSL (3.0) does offer TLS 1.1 (checked: the
    // server's own report below is "unsupported protocol"), so the refusal is the server's
    // protocol_version alert rather than the client failing to start.
    expect(old).toMatchObject({
      ok: false,
      error: { code: "ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION" },
    });
    await errors.next((e) => /UNSUPPORTED_PROTOCOL|unsupported protocol/.test(describeChain(e)));
    expect(server.connections).toHaveLength(0);
    const tls12 = await rawTls(cleanups, port, { minVersion: "TLSv1.2", maxVersion: "TLSv1.2" });
    expect(tls12).toStrictEqual({ ok: true, protocol: "TLSv1.2" });
  });

  it("minVersion TLSv1.3 refuses a TLSv1.2 client; the ezipc client (TLS 1.3) gets in", async ({
    cleanups,
  }) => {
    const { server, port } = await start(cleanups, { tls: serverTls({ minVersion: "TLSv1.3" }) });
    const old = await rawTls(cleanups, port, { minVersion: "TLSv1.2", maxVersion: "TLSv1.2" });
    expect(old).toMatchObject({
      ok: false,
      error: { code: "ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION" },
    });
    const client = await connect(contract, server.address, { tls: { ca: certs.ca.certPath } });
    cleanups.add(client, (c) => c.close());
    expect(await client.call("echo", { text: "1.3" })).toBe("1.3");
  });
});

/** An error's message with its causes' messages and codes, for matching a reason anywhere. */
function describeChain(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const code = (current as NodeJS.ErrnoException).code;
    parts.push(`${current.name}: ${current.message}${code ? ` (${code})` : ""}`);
    current = current.cause;
  }
  return parts.join(" ← ");
}
