import { createConnection, isIP, type Socket } from "node:net";
import { TLSSocket, connect as tlsConnect } from "node:tls";
import {
  AuthenticationError,
  ConnectionClosedError,
  type ConnectionInfo,
  TimeoutError,
} from "@ezipc/contract";
import { DEFAULT_MAX_FRAME_BYTES } from "@ezipc/protocol";
import {
  type Address,
  type AuthOptions,
  authenticate,
  DEFAULT_HANDSHAKE_TIMEOUT,
  nodeTlsOptions,
  peerCertificateOf,
  SocketTransport,
  type TlsOptions,
} from "@ezipc/protocol/node";

/** The default deadline for establishing a connection: 10 s. */
export const DEFAULT_CONNECT_TIMEOUT = 10_000;

/** What {@link dial} needs of the client's options. */
export interface DialOptions extends AuthOptions {
  tls?: TlsOptions;
  connectTimeout?: number;
  maxFrameBytes?: number;
  frameTimeout?: number;
  idleTimeout?: number;
  maxWriteBufferBytes?: number;
}

/** One established (and, with an `authKey`, authenticated) connection, before its `Peer`. */
export interface Dialed {
  readonly socket: Socket;
  readonly transport: SocketTransport;
  /** Frames that arrived right behind the handshake, for the peer to receive first. */
  readonly leftover: Uint8Array[];
  readonly connection: ConnectionInfo;
}

/**
 * Opens one connection to `address`: socket (Unix, pipe, TCP or TLS), transport, and the
 * authentication handshake when an `authKey` is set. One attempt, no retries; aborting
 * `signal` destroys whatever was opened so far.
 */
export async function dial(
  address: Address,
  where: string,
  options: DialOptions,
  signal?: AbortSignal,
): Promise<Dialed> {
  const connectTimeout = options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT;
  const handshakeTimeout = options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
  const socket = await openSocket(
    () => {
      if (address.kind === "unix" || address.kind === "pipe") {
        return createConnection(address.path);
      }
      if (address.kind === "tcp") {
        return createConnection({ host: address.host, port: address.port, noDelay: true });
      }
      const tls = options.tls ?? {};
      return tlsConnect({
        host: address.host,
        port: address.port,
        noDelay: true,
        servername: tls.servername ?? (isIP(address.host) ? "" : address.host),
        ...nodeTlsOptions(tls, "client"),
      });
    },
    address.kind === "tls" ? "secureConnect" : "connect",
    connectTimeout + (address.kind === "tls" ? handshakeTimeout : 0),
    where,
    signal,
  );
  const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const transport = new SocketTransport(socket, {
    maxFrameBytes,
    ...(options.frameTimeout !== undefined && { frameTimeout: options.frameTimeout }),
    ...(options.idleTimeout !== undefined && { idleTimeout: options.idleTimeout }),
    ...(options.maxWriteBufferBytes !== undefined && {
      maxWriteBufferBytes: options.maxWriteBufferBytes,
    }),
  });
  let leftover: Uint8Array[] = [];
  if (options.authKey !== undefined) {
    const cancel = () => transport.destroy(cancelled(where));
    signal?.addEventListener("abort", cancel, { once: true });
    const started = Date.now();
    try {
      ({ leftover } = await authenticate(
        transport,
        "connect",
        { ...options, authKey: options.authKey },
        maxFrameBytes,
        handshakeTimeout,
      ));
    } catch (error) {
      // A handshake cut short by a close or by its deadline says nothing about the key: the
      // server may be restarting or overloaded. Only a verdict (#FAILURE#, a key that does
      // not match, a digest we refuse) is final.
      if (
        error instanceof Error &&
        (transport.closed || Date.now() - started >= handshakeTimeout)
      ) {
        transient.add(error);
      }
      transport.destroy();
      throw signal?.aborted ? cancelled(where) : error;
    } finally {
      signal?.removeEventListener("abort", cancel);
    }
  }
  return {
    socket,
    transport,
    leftover,
    connection: {
      id: `${socket.localAddress ?? "local"}:${socket.localPort ?? process.pid}`,
      transport: address.kind,
      remoteAddress: where,
      authenticated: options.authKey !== undefined,
      peerCertificate: socket instanceof TLSSocket ? peerCertificateOf(socket) : undefined,
    },
  };
}

/** Failures of one attempt that a later attempt may not repeat, though their class says otherwise. */
const transient = new WeakSet<Error>();

/** Socket errors that say nothing about certificates or keys: the peer went away mid-handshake. */
const TRANSIENT_CODES = new Set(["ECONNRESET", "EPIPE", "ETIMEDOUT", "ECONNABORTED"]);

/**
 * Whether a failed attempt is final for a reconnecting client: an authentication verdict
 * (wrong key, a certificate that does not verify) will fail the same way every time, so
 * retrying it would only hammer the server.
 */
export function isPermanentFailure(error: unknown): boolean {
  return error instanceof AuthenticationError && !transient.has(error);
}

function cancelled(where: string): ConnectionClosedError {
  return new ConnectionClosedError(`Connecting to ${where} was cancelled: the client was closed`);
}

/** Opens a socket, rejecting with a clear error on failure or after `timeout` ms. */
function openSocket(
  open: () => Socket,
  ready: "connect" | "secureConnect",
  timeout: number,
  address: string,
  signal: AbortSignal | undefined,
): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    if (signal?.aborted) {
      reject(cancelled(address));
      return;
    }
    const socket = open();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const onAbort = () => {
      done();
      socket.destroy();
      reject(cancelled(address));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    const timer = setTimeout(() => {
      done();
      socket.destroy();
      reject(new TimeoutError(`Could not connect to ${address} within ${timeout} ms`, timeout));
    }, timeout);
    socket.once(ready, () => {
      done();
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      done();
      socket.destroy();
      const tls = ready === "secureConnect";
      const reason =
        tls && (error.code === "ECONNRESET" || /before secure TLS/.test(error.message))
          ? "the server closed the connection during the TLS handshake: is it a plain tcp:// server?"
          : tls && error.code === "ERR_SSL_WRONG_VERSION_NUMBER"
            ? "the server does not speak TLS: is it a plain tcp:// server?"
            : `${error.code ?? "error"}: ${error.message}`;
      const ErrorClass =
        tls && error.code !== "ECONNREFUSED" && error.code !== "ENOENT"
          ? AuthenticationError
          : ConnectionClosedError;
      const failure = new ErrorClass(`Could not connect to ${address}: ${reason}`, {
        cause: error,
      });
      if (TRANSIENT_CODES.has(error.code ?? "") || /before secure TLS/.test(error.message)) {
        transient.add(failure);
      }
      reject(failure);
    });
  });
}
