import { readFileSync } from "node:fs";
import type { ConnectionOptions, TlsOptions as NodeTlsOptions, TLSSocket } from "node:tls";
import {
  AuthenticationError,
  ConnectionClosedError,
  type PeerCertificate,
  RpcError,
} from "@ezipc/contract";
import {
  acceptHandshake,
  connectHandshake,
  DEFAULT_HANDSHAKE_TIMEOUT,
  type HandshakeResult,
  normalizeAuthKey,
} from "../handshake.js";
import { transportHandshakeChannel } from "../handshake-channel.js";
import type { Transport } from "../transport.js";
import { nodeHandshakeCrypto } from "./handshake-crypto.js";

/** Authentication options shared by servers and clients. */
export interface AuthOptions {
  /**
   * Shared secret for the mutual challenge–response handshake (Python
   * `multiprocessing.connection`'s). Both sides must hold the same key.
   */
  authKey?: string | Uint8Array;
  /**
   * Accept the legacy HMAC-MD5 digest of Python ≤ 3.11 (both to verify its answers and to
   * answer its 20-byte challenges). Off by default: MD5 is weak.
   * @default false
   */
  allowLegacyDigest?: boolean;
  /**
   * Deadline for the TLS and authentication handshakes together, in ms.
   * @default 5_000
   */
  handshakeTimeout?: number;
}

/** TLS material: each of `key`, `cert`, `ca` is PEM contents or a path to a PEM file. */
export interface TlsOptions {
  /** Private key (PEM, or a path to it). Required on servers; on clients for mutual TLS. */
  key?: string | Uint8Array;
  /** Certificate chain (PEM, or a path to it). Required on servers; on clients for mutual TLS. */
  cert?: string | Uint8Array;
  /**
   * Trusted CA certificates (PEM, or a path, or a list). Clients verify the server against
   * it (else against the system's roots); servers verify client certificates against it.
   */
  ca?: string | Uint8Array | (string | Uint8Array)[];
  /** Passphrase of an encrypted `key`. */
  passphrase?: string;
  /**
   * Server only: require every client to present a certificate signed by `ca` (mutual
   * TLS). The certificate's subject is on `ctx.connection.peerCertificate`.
   * @default false
   */
  requestClientCertificate?: boolean;
  /** Client only: the name to verify the server's certificate against. @default the host */
  servername?: string;
  /**
   * Lowest TLS version accepted.
   * @default "TLSv1.2"
   */
  minVersion?: "TLSv1.2" | "TLSv1.3";
}

/** Reads PEM material given as contents or as a file path. */
export function loadPem(value: string | Uint8Array): string | Buffer {
  if (typeof value !== "string") return Buffer.from(value);
  if (value.includes("-----BEGIN")) return value;
  try {
    return readFileSync(value);
  } catch (error) {
    throw new Error(`Cannot read TLS file ${value}: ${(error as Error).message}`, { cause: error });
  }
}

/** Builds Node's TLS options from ours. */
export function nodeTlsOptions(
  tls: TlsOptions,
  role: "server" | "client",
): NodeTlsOptions & ConnectionOptions {
  const load = (v: string | Uint8Array | undefined) => (v === undefined ? undefined : loadPem(v));
  if (role === "server" && (tls.key === undefined || tls.cert === undefined)) {
    throw new TypeError("A tls:// server needs tls.key and tls.cert");
  }
  const ca =
    tls.ca === undefined
      ? undefined
      : Array.isArray(tls.ca)
        ? tls.ca.map(loadPem)
        : [loadPem(tls.ca)];
  return {
    ...(tls.key !== undefined && { key: load(tls.key) }),
    ...(tls.cert !== undefined && { cert: load(tls.cert) }),
    ...(ca !== undefined && { ca }),
    ...(tls.passphrase !== undefined && { passphrase: tls.passphrase }),
    minVersion: tls.minVersion ?? "TLSv1.2",
    ...(role === "server" && {
      requestCert: tls.requestClientCertificate ?? false,
      rejectUnauthorized: tls.requestClientCertificate ?? false,
    }),
  };
}

/** The verified peer certificate of a TLS socket, if it presented one. */
export function peerCertificateOf(socket: TLSSocket): PeerCertificate | undefined {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0 || !socket.authorized) return undefined;
  const fields = (v: unknown): Record<string, string> => {
    const out: Record<string, string> = {};
    if (typeof v === "object" && v !== null) {
      for (const [k, val] of Object.entries(v))
        out[k] = Array.isArray(val) ? val.join(", ") : String(val);
    }
    return out;
  };
  return {
    subject: fields(cert.subject),
    issuer: fields(cert.issuer),
    fingerprint256: cert.fingerprint256,
  };
}

/**
 * Runs the authentication handshake on a fresh transport (listening side when `role` is
 * `accept`). Resolves with leftover frames that followed the handshake; rejects with
 * `AuthenticationError`.
 */
export async function authenticate(
  transport: Transport,
  role: "accept" | "connect",
  options: AuthOptions & { authKey: string | Uint8Array },
  maxFrameBytes: number,
  timeout: number,
): Promise<{ leftover: Uint8Array[]; result: HandshakeResult }> {
  const channel = transportHandshakeChannel(transport, maxFrameBytes);
  const handshake = {
    key: normalizeAuthKey(options.authKey),
    crypto: nodeHandshakeCrypto,
    allowLegacyDigest: options.allowLegacyDigest ?? false,
    timeout,
  };
  let result: HandshakeResult;
  try {
    result =
      role === "accept"
        ? await acceptHandshake(channel, handshake)
        : await connectHandshake(channel, handshake);
  } catch (error) {
    // The channel's refusal (a JSON-RPC error instead of a challenge) is not about keys.
    const refusal = error instanceof AuthenticationError ? error.cause : error;
    if (refusal instanceof ConnectionClosedError && refusal.cause instanceof RpcError) {
      throw refusal;
    }
    if (
      role === "connect" &&
      error instanceof AuthenticationError &&
      /within/.test(error.message)
    ) {
      // The server said nothing: it has no authKey, or it expects TLS first.
      throw new AuthenticationError(
        `${error.message} — the server sent no challenge: does it have an authKey set, ` +
          "or is it a tls:// server?",
        { cause: error },
      );
    }
    throw error;
  }
  if (transport.closed) {
    throw new AuthenticationError("Connection closed right after the authentication handshake");
  }
  return { leftover: channel.release(), result };
}

export { DEFAULT_HANDSHAKE_TIMEOUT, type PeerCertificate };
