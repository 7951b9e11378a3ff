import { EventEmitter } from "node:events";
import { createConnection, isIP, type Socket } from "node:net";
import { TLSSocket, connect as tlsConnect } from "node:tls";
import {
  AuthenticationError,
  type CallArgs,
  type CallOptions,
  ConnectionClosedError,
  type ConnectionInfo,
  type Contract,
  type ContractSide,
  type Handlers,
  type InferItem,
  type InferResult,
  type MethodNames,
  type NotificationNames,
  type NotifyArgs,
  type RemoteApi,
  type StreamArgs,
  type StreamNames,
  TimeoutError,
} from "@ezipc/contract";
import {
  createDispatchTable,
  createRemoteTable,
  DEFAULT_MAX_FRAME_BYTES,
  type ErrorReport,
  Peer,
} from "@ezipc/protocol";
import {
  type AuthOptions,
  authenticate,
  DEFAULT_HANDSHAKE_TIMEOUT,
  formatAddress,
  nodeTlsOptions,
  parseAddress,
  peerCertificateOf,
  SocketTransport,
  type TlsOptions,
} from "@ezipc/protocol/node";

/** The default deadline for establishing a connection: 10 s. */
export const DEFAULT_CONNECT_TIMEOUT = 10_000;

/** Options of {@link connect} that do not depend on the contract. */
export interface BaseConnectOptions extends AuthOptions {
  /**
   * TLS options for `tls://` addresses: `ca` to trust a private CA or a self-signed server,
   * `key` and `cert` for mutual TLS, `servername` to verify another name than the host.
   */
  tls?: TlsOptions;
  /** Default timeout of each call, in ms; `Infinity` or `0` waits forever. @default 30_000 */
  timeout?: number;
  /** Deadline for the connection to be established, in ms. @default 10_000 */
  connectTimeout?: number;
  /**
   * Validate params before sending and results on arrival.
   * @default true
   */
  validate?: boolean;
  /** Largest frame accepted or sent, in bytes. @default 16 MiB */
  maxFrameBytes?: number;
  /** Largest batch accepted. @default 100 */
  maxBatchSize?: number;
  /** Server → client handlers running at once. @default 1024 */
  maxInFlight?: number;
  /** Deepest JSON nesting accepted. @default 64 */
  maxDepth?: number;
  /** Milliseconds without traffic after which a connection is closed; `0` disables it. @default 0 */
  idleTimeout?: number;
  /** Milliseconds for a started frame to complete. @default 30_000 */
  frameTimeout?: number;
  /** Bytes that may queue unsent before the connection is dropped. @default 64 MiB */
  maxWriteBufferBytes?: number;
  /** Receives errors no call sees: a client handler's throw, malformed messages, … */
  onError?: (error: unknown, report: ErrorReport) => void;
}

/**
 * Options of {@link connect}. `handlers` implements the contract's `client` half and is
 * required when that half is not empty.
 */
export type ConnectOptions<
  TServer extends ContractSide,
  TClient extends ContractSide,
> = BaseConnectOptions &
  (keyof TClient extends never
    ? { handlers?: Handlers<TClient, TServer> }
    : { handlers: Handlers<TClient, TServer> });

/** Events of a {@link Client}. */
export interface ClientEvents {
  /** The connection closed; `error` says why when it did not close on request. */
  close: [error: Error | undefined];
}

/**
 * A connection to an ezipc server, with typed `call` and `notify` for the contract's
 * `server` half. Create it with {@link connect}.
 */
export class Client<TServer extends ContractSide>
  extends EventEmitter<ClientEvents>
  implements RemoteApi<TServer>
{
  readonly #peer: Peer;
  readonly #closed: Promise<void>;

  /** @internal use {@link connect} */
  constructor(peer: Peer, closed: Promise<void>) {
    super();
    this.#peer = peer;
    this.#closed = closed;
  }

  /** Facts about this connection (id, transport, remote address). */
  get connection(): ConnectionInfo {
    return this.#peer.connection;
  }

  /** Calls awaiting their result. */
  get pendingCount(): number {
    return this.#peer.pendingCount;
  }

  /** Whether the connection is gone. */
  get closed(): boolean {
    return this.#peer.closed;
  }

  /**
   * Calls a server method; resolves with its validated result.
   *
   * Rejects with `ValidationError` (params do not match the contract: nothing was sent;
   * or the result does not), `RpcError` (the server answered with an error),
   * `TimeoutError`, `AbortError` or `ConnectionClosedError`.
   *
   * @example
   * const { written } = await client.call("write", { filename: "a.txt", content: "hi" }, { timeout: 5_000 });
   */
  call<K extends MethodNames<TServer>>(
    method: K,
    ...args: CallArgs<TServer, K>
  ): Promise<InferResult<TServer, K>> {
    return this.#peer.call(method, args[0], args[1] as CallOptions | undefined) as Promise<
      InferResult<TServer, K>
    >;
  }

  /**
   * Opens a server stream; iterate it with `for await`. Items are validated; a slow loop
   * makes the server's generator wait (flow control). Leaving the loop early stops the
   * generator and runs its `finally`.
   *
   * @example
   * for await (const row of client.stream("rows", { table: "users" })) console.log(row);
   */
  stream<K extends StreamNames<TServer>>(
    method: K,
    ...args: StreamArgs<TServer, K>
  ): AsyncIterable<InferItem<TServer, K>> {
    return this.#peer.stream(method, args[0], args[1]) as AsyncIterable<InferItem<TServer, K>>;
  }

  /** Sends a notification; resolves once it was written to the socket. */
  notify<K extends NotificationNames<TServer>>(
    method: K,
    ...args: NotifyArgs<TServer, K>
  ): Promise<void> {
    return this.#peer.notify(method, args[0]);
  }

  /**
   * Closes the connection after writing what is queued; pending calls reject with
   * `ConnectionClosedError`. Resolves once the socket is closed.
   */
  close(): Promise<void> {
    this.#peer.close();
    return this.#closed;
  }

  /** `await using client = await connect(…)` closes it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Connects to an ezipc server and resolves once the connection is ready.
 *
 * @example
 * const client = await connect(files, "unix:/tmp/files.sock");
 * const { written } = await client.call("write", { filename: "a.txt", content: "hi" });
 * await client.close();
 */
export async function connect<TServer extends ContractSide, TClient extends ContractSide>(
  contract: Contract<TServer, TClient>,
  address: string,
  ...[options]: keyof TClient extends never
    ? [options?: ConnectOptions<TServer, TClient>]
    : [options: ConnectOptions<TServer, TClient>]
): Promise<Client<TServer>> {
  const opts = (options ?? {}) as BaseConnectOptions & { handlers?: Record<string, unknown> };
  const parsed = parseAddress(address);
  // Compile the contract before opening a socket: a missing handler fails fast.
  const local = createDispatchTable(contract.client, opts.handlers ?? {}, "connect handlers");
  const remote = createRemoteTable(contract.server);
  const where = formatAddress(parsed);
  const connectTimeout = opts.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT;
  const handshakeTimeout = opts.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
  const socket = await openSocket(
    () => {
      if (parsed.kind === "unix" || parsed.kind === "pipe") return createConnection(parsed.path);
      if (parsed.kind === "tcp") {
        return createConnection({ host: parsed.host, port: parsed.port, noDelay: true });
      }
      const tls = opts.tls ?? {};
      return tlsConnect({
        host: parsed.host,
        port: parsed.port,
        noDelay: true,
        servername: tls.servername ?? (isIP(parsed.host) ? "" : parsed.host),
        ...nodeTlsOptions(tls, "client"),
      });
    },
    parsed.kind === "tls" ? "secureConnect" : "connect",
    connectTimeout + (parsed.kind === "tls" ? handshakeTimeout : 0),
    where,
  );
  const maxFrameBytes = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const transport = new SocketTransport(socket, {
    maxFrameBytes,
    ...(opts.frameTimeout !== undefined && { frameTimeout: opts.frameTimeout }),
    ...(opts.idleTimeout !== undefined && { idleTimeout: opts.idleTimeout }),
    ...(opts.maxWriteBufferBytes !== undefined && {
      maxWriteBufferBytes: opts.maxWriteBufferBytes,
    }),
  });
  let leftover: Uint8Array[] = [];
  if (opts.authKey !== undefined) {
    try {
      ({ leftover } = await authenticate(
        transport,
        "connect",
        { ...opts, authKey: opts.authKey },
        maxFrameBytes,
        handshakeTimeout,
      ));
    } catch (error) {
      transport.destroy();
      throw error;
    }
  }
  let client: Client<TServer> | undefined;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => {
    resolveClosed = resolve;
  });
  const peer = new Peer({
    transport,
    local,
    remote,
    connection: {
      id: `${socket.localAddress ?? "local"}:${socket.localPort ?? process.pid}`,
      transport: parsed.kind,
      remoteAddress: where,
      authenticated: opts.authKey !== undefined,
      peerCertificate: socket instanceof TLSSocket ? peerCertificateOf(socket) : undefined,
    },
    validate: opts.validate ?? true,
    ...(opts.timeout !== undefined && { timeout: opts.timeout }),
    ...(opts.maxBatchSize !== undefined && { maxBatchSize: opts.maxBatchSize }),
    ...(opts.maxInFlight !== undefined && { maxInFlight: opts.maxInFlight }),
    ...(opts.maxDepth !== undefined && { maxDepth: opts.maxDepth }),
    ...(opts.onError !== undefined && { onError: opts.onError }),
    onClose: (error) => {
      resolveClosed();
      client?.emit("close", error);
    },
  });
  client = new Client<TServer>(peer, closed);
  for (const frame of leftover) peer.receive(frame);
  return client;
}

/** Opens a socket, rejecting with a clear error on failure or after `timeout` ms. */
function openSocket(
  open: () => Socket,
  ready: "connect" | "secureConnect",
  timeout: number,
  address: string,
): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const socket = open();
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new TimeoutError(`Could not connect to ${address} within ${timeout} ms`, timeout));
    }, timeout);
    socket.once(ready, () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
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
      reject(new ErrorClass(`Could not connect to ${address}: ${reason}`, { cause: error }));
    });
  });
}
