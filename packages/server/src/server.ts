import { EventEmitter } from "node:events";
import { chmodSync, lstatSync, unlinkSync } from "node:fs";
import {
  createConnection,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from "node:net";
import { createServer as createTlsServer, TLSSocket, type Server as TlsServer } from "node:tls";
import {
  AuthenticationError,
  type ConnectionInfo,
  type Contract,
  type ContractSide,
  ErrorCodes,
  type Handlers,
  type NotificationNames,
  type NotifyArgs,
  ProtocolError,
} from "@ezipc/contract";
import {
  type Authorize,
  createDispatchTable,
  createRemoteTable,
  DEFAULT_MAX_FRAME_BYTES,
  type DispatchTable,
  type ErrorReport,
  encodeFrame,
  errorResponse,
  Peer,
  type RemoteTable,
} from "@ezipc/protocol";
import {
  type Address,
  type AuthOptions,
  authenticate,
  DEFAULT_HANDSHAKE_TIMEOUT,
  formatAddress,
  isLoopbackHost,
  nodeTlsOptions,
  parseAddress,
  peerCertificateOf,
  SocketTransport,
  type TlsOptions,
} from "@ezipc/protocol/node";
import { Connection } from "./connection.js";

/** The default most connections one server holds: 10,000. */
export const DEFAULT_MAX_CONNECTIONS = 10_000;
/** The default grace period of `close()` for in-flight calls: 10 s. */
export const DEFAULT_CLOSE_TIMEOUT = 10_000;

/** The default most connections in their handshake at once: 128. */
export const DEFAULT_MAX_UNAUTHENTICATED = 128;

/** The default heartbeat interval: a ping after 15 s without a byte from an ezipc client. */
export const DEFAULT_HEARTBEAT_INTERVAL = 15_000;
/** The default time a client has to answer a heartbeat ping: 20 s. */
export const DEFAULT_HEARTBEAT_TIMEOUT = 20_000;

/** Options of {@link createServer}. Every limit has a default; see docs/security.md. */
export interface ServerOptions extends AuthOptions {
  /** Certificate and key for `tls://` addresses, and client-certificate checks (mutual TLS). */
  tls?: TlsOptions;
  /**
   * Listen on a non-loopback TCP address without TLS or an `authKey`. Off by default:
   * such a server is refused with an error that names the fix.
   * @default false
   */
  insecure?: boolean;
  /** Connections still in their TLS or authentication handshake at once; excess are refused. @default 128 */
  maxUnauthenticated?: number;
  /**
   * Validate params and results against the contract.
   * @default true
   */
  validate?: boolean;
  /** Default timeout of server → client calls, in ms. @default 30_000 */
  timeout?: number;
  /** Largest frame accepted or sent, in bytes. @default 16 MiB */
  maxFrameBytes?: number;
  /** Largest batch accepted. @default 100 */
  maxBatchSize?: number;
  /** Handlers running at once per connection; excess calls get -32003. @default 1024 */
  maxInFlight?: number;
  /** Deepest JSON nesting accepted. @default 64 */
  maxDepth?: number;
  /** Connections held at once; excess connections are refused. @default 10_000 */
  maxConnections?: number;
  /** Milliseconds without traffic after which a connection is closed; `0` disables it. @default 0 */
  idleTimeout?: number;
  /** Milliseconds for a started frame to complete (slowloris defence). @default 30_000 */
  frameTimeout?: number;
  /** Bytes that may queue for a connection that does not read before it is dropped. @default 64 MiB */
  maxWriteBufferBytes?: number;
  /** Grace period of `close()` for in-flight calls, in ms. @default 10_000 */
  closeTimeout?: number;
  /**
   * Detect silent clients: after `interval` ms without receiving a byte from a client,
   * send it `rpc.ping`; with no answer within `timeout` ms its connection is closed (its
   * handlers' `ctx.signal` abort). Only clients that have shown they speak ezipc are
   * pinged: a plain JSON-RPC client never receives an unsolicited request. `false` turns
   * it off.
   * @default { interval: 15_000, timeout: 20_000 }
   */
  heartbeat?: { interval?: number; timeout?: number } | false;
  /** Send handler error messages and stacks to callers (development only). @default false */
  exposeErrors?: boolean;
  /**
   * Decides per connection and method whether a call may run (after its params were
   * validated): `true` allows it, `false` refuses it with -32004 Unauthorized, a returned or
   * thrown `RpcError` is sent as it is.
   *
   * @example
   * authorize: ({ connection, method }) => method !== "admin" || connection.peerCertificate?.subject.CN === "ops"
   */
  authorize?: Authorize;
  /** Receives every error callers do not see: handler throws, bad input, result bugs. */
  onError?: (error: unknown, report: ErrorReport) => void;
}

/** Events of a {@link Server}. */
export interface ServerEvents<TClient extends ContractSide> {
  /** A client connected (after authentication, when an `authKey` is set). */
  connect: [connection: Connection<TClient>];
  /** A client's connection closed; `error` tells why when it did not close cleanly. */
  disconnect: [connection: Connection<TClient>, error: Error | undefined];
}

/** Options of {@link Server.close}. */
export interface CloseOptions {
  /** Grace period for in-flight calls, in ms; then connections are closed regardless. */
  timeout?: number;
}

/**
 * An ezipc server: serves the `server` half of a contract to every client that connects.
 * Create it with {@link createServer}.
 */
export class Server<
  TServer extends ContractSide = ContractSide,
  TClient extends ContractSide = ContractSide,
> extends EventEmitter<ServerEvents<TClient>> {
  readonly #local: DispatchTable;
  readonly #remote: RemoteTable;
  readonly #options: ServerOptions;
  readonly #connections = new Set<Connection<TClient>>();
  #net: NetServer | undefined;
  #address: Address | undefined;
  #unlinkOnClose: { path: string; dev: number; ino: number } | undefined;
  #closing: Promise<void> | undefined;
  #nextConnection = 0;
  /** Every connection's `onClose`: one function for all of them, not a closure each. */
  readonly #onPeerClose = (error: Error | undefined, info: ConnectionInfo): void => {
    const connection = info as Connection<TClient>;
    this.#connections.delete(connection);
    connection.markClosed();
    this.emit("disconnect", connection, error);
  };
  readonly #handshaking = new Set<Socket>();
  #tlsServer: TlsServer | undefined;
  /** Sockets of a tls:// listener waiting for their TLS handshake, and what follows it. */
  readonly #tlsWaiting = new WeakMap<Socket, (socket: Socket) => void>();

  constructor(
    contract: Contract<TServer, TClient>,
    handlers: Handlers<TServer, TClient>,
    options: ServerOptions = {},
  ) {
    super();
    this.#local = createDispatchTable(
      contract.server,
      handlers as Record<string, unknown>,
      "createServer",
    );
    this.#remote = createRemoteTable(contract.client);
    this.#options = options;
  }

  /** The address the server listens on, with the real port for `tcp://…:0`. Throws before `listen`. */
  get address(): string {
    if (this.#address === undefined)
      throw new Error("Server is not listening: call listen() first");
    return formatAddress(this.#address);
  }

  /** Whether the server is accepting connections. */
  get listening(): boolean {
    return this.#net?.listening ?? false;
  }

  /** The live connections, each with its `peer` for server → client calls. */
  get connections(): readonly Connection<TClient>[] {
    return [...this.#connections];
  }

  /**
   * Starts listening; resolves once the socket is bound.
   *
   * @example
   * await server.listen("unix:/run/app.sock");
   * await server.listen("tcp://127.0.0.1:0"); // server.address has the real port
   */
  async listen(address: string): Promise<void> {
    if (this.#net !== undefined) throw new Error("Server is already listening");
    if (this.#closing !== undefined) throw new Error("Server is closed");
    const parsed = parseAddress(address);
    const options = this.#options;
    if (
      parsed.kind === "tcp" &&
      !isLoopbackHost(parsed.host) &&
      options.authKey === undefined &&
      !options.insecure
    ) {
      throw new Error(
        `Refusing to listen on ${address} without TLS or an authKey: anyone who can reach it ` +
          "could call every method. Use a tls:// address, set authKey, listen on 127.0.0.1 or a " +
          "Unix socket — or pass { insecure: true } if the network is trusted.",
      );
    }
    if (parsed.kind === "tls") {
      if (options.tls === undefined) {
        throw new TypeError(`Listening on ${address} needs the tls option (key and cert)`);
      }
      this.#tlsServer = this.#createTlsServer(options.tls);
    }
    const net = createNetServer({ noDelay: true });
    net.on("connection", (socket) => this.#accept(socket, parsed));
    if (parsed.kind === "unix" || parsed.kind === "pipe") {
      if (process.platform !== "win32") await removeStaleSocket(parsed.path);
      await listenOwnerOnly(net, parsed.path);
      if (process.platform !== "win32") {
        const { dev, ino } = lstatSync(parsed.path);
        this.#unlinkOnClose = { path: parsed.path, dev, ino };
      }
      this.#address = parsed;
    } else {
      await new Promise<void>((resolve, reject) => {
        net.once("error", reject);
        net.listen({ host: parsed.host, port: parsed.port }, () => {
          net.off("error", reject);
          resolve();
        });
      });
      const bound = net.address();
      const port = typeof bound === "object" && bound !== null ? bound.port : parsed.port;
      this.#address = { kind: parsed.kind, host: parsed.host, port };
    }
    net.on("error", (error) => this.#report(error));
    this.#net = net;
  }

  /**
   * Sends a notification to every connection; resolves to how many it reached (written to
   * their sockets). Connections that fail are skipped, not thrown for.
   */
  async broadcast<K extends NotificationNames<TClient>>(
    method: K,
    ...args: NotifyArgs<TClient, K>
  ): Promise<number> {
    const results = await Promise.allSettled(
      [...this.#connections].map((c) => c.peer.notify(method, ...args)),
    );
    return results.filter((r) => r.status === "fulfilled").length;
  }

  /**
   * Shuts down gracefully: stops accepting, sends `rpc.goaway` to every ezipc client (they
   * send no new calls here; reconnecting clients go find the next server), answers calls that
   * still arrive with -32005 (shutting down), lets in-flight calls finish within the grace
   * period, then closes every connection. Calls still running then are cut off: their
   * callers get `ConnectionClosedError` caused by a -32005 error saying so.
   */
  close(options: CloseOptions = {}): Promise<void> {
    this.#closing ??= this.#close(
      options.timeout ?? this.#options.closeTimeout ?? DEFAULT_CLOSE_TIMEOUT,
    );
    return this.#closing;
  }

  async #close(grace: number): Promise<void> {
    const net = this.#net;
    const stopped = net
      ? new Promise<void>((resolve) => net.close(() => resolve()))
      : Promise.resolve();
    for (const socket of this.#handshaking) socket.destroy();
    const connections = [...this.#connections];
    // Goaway first, so clients stop sending before new calls would be refused.
    for (const c of connections) {
      c.goaway("server is shutting down");
      c.drain();
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(connections.map((c) => c.whenIdle())),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, grace);
      }),
    ]);
    clearTimeout(timer);
    for (const c of connections) {
      c.cutOff(
        `Server is shutting down: calls still running after the grace period (${grace} ms) were cut off`,
        ErrorCodes.ShuttingDown,
      );
    }
    await Promise.all(connections.map((c) => c.close()));
    await stopped;
    const bound = this.#unlinkOnClose;
    if (bound !== undefined) {
      try {
        // Only our own socket file: a new server may already listen on the same path.
        const stat = lstatSync(bound.path);
        if (stat.isSocket() && stat.dev === bound.dev && stat.ino === bound.ino) {
          unlinkSync(bound.path);
        }
      } catch {
        // Already gone.
      }
    }
  }

  #accept(socket: Socket, address: Address): void {
    const options = this.#options;
    socket.on("error", ignore); // reported through the transport or the handshake
    if (this.#closing !== undefined) {
      refuseConnection(socket, ErrorCodes.ShuttingDown, "Server is shutting down");
      return;
    }
    const max = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    if (this.#connections.size + this.#handshaking.size >= max) {
      // Refused with a frame the client can read, rather than a silent reset.
      refuseConnection(socket, ErrorCodes.Overloaded, "Too many connections (maxConnections)");
      this.#report(new Error(`Refused a connection: maxConnections (${max}) reached`));
      return;
    }
    const secure = address.kind === "tls";
    if (!secure && options.authKey === undefined) {
      this.#start(socket, address, [], undefined);
      return;
    }
    const maxUnauthenticated = options.maxUnauthenticated ?? DEFAULT_MAX_UNAUTHENTICATED;
    if (this.#handshaking.size >= maxUnauthenticated) {
      refuseConnection(socket, ErrorCodes.Overloaded, "Too many connections in their handshake");
      this.#report(
        new Error(`Refused a connection: maxUnauthenticated (${maxUnauthenticated}) reached`),
      );
      return;
    }
    // Until it proves itself, a connection has a deadline and counts against a small cap.
    this.#handshaking.add(socket);
    const timeout = options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
    const deadline = setTimeout(() => {
      this.#report(new AuthenticationError(`Handshake did not complete within ${timeout} ms`));
      socket.destroy();
    }, timeout);
    const done = () => {
      clearTimeout(deadline);
      this.#handshaking.delete(socket);
    };
    socket.once("close", done);
    const proceed = (stream: Socket) => {
      if (options.authKey === undefined) {
        done();
        this.#start(stream, address, [], undefined);
        return;
      }
      const transport = this.#transport(stream);
      authenticate(
        transport,
        "accept",
        { ...options, authKey: options.authKey },
        transport.maxFrameBytes,
        timeout,
      ).then(
        ({ leftover }) => {
          done();
          if (this.#closing !== undefined) {
            transport.destroy();
            return;
          }
          this.#start(stream, address, leftover, transport);
        },
        (error: unknown) => {
          done();
          this.#report(error);
          transport.close();
        },
      );
    };
    if (!secure) {
      proceed(socket);
      return;
    }
    // A plaintext client gets a frame it can read that says TLS is required, instead of a
    // TLS library's silent close; a TLS record starts with 0x16 (handshake).
    socket.once("data", (first: Buffer) => {
      if (first[0] !== 0x16) {
        done();
        refuseConnection(
          socket,
          ErrorCodes.ProtocolMismatch,
          "This server requires TLS: connect with a tls:// address",
        );
        this.#report(new ProtocolError("A plaintext client connected to a TLS listener"));
        return;
      }
      socket.pause();
      socket.unshift(first);
      this.#tlsWaiting.set(socket, proceed);
      this.#tlsServer!.emit("connection", socket);
    });
  }

  /**
   * The TLS side of a tls:// listener: a tls.Server that never listens, handed each socket
   * that starts like TLS. Only a server-side TLSSocket made by a tls.Server gets
   * `authorized` / `authorizationError`, which client-certificate checks need.
   */
  #createTlsServer(tls: TlsOptions): TlsServer {
    const requireCert = tls.requestClientCertificate ?? false;
    const server = createTlsServer({
      ...nodeTlsOptions(tls, "server"),
      // Our own handshake deadline applies; this one only has to be longer.
      handshakeTimeout: 2 * (this.#options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT),
    });
    const rawOf = (tlsSocket: TLSSocket) => (tlsSocket as unknown as { _parent?: Socket })._parent;
    server.on("tlsClientError", (error: Error, tlsSocket: TLSSocket) => {
      // A rejected client certificate ends the handshake with a bare hang-up; the reason
      // is on the socket.
      const rejected = tlsSocket.authorizationError;
      this.#report(
        rejected
          ? new AuthenticationError(`Client certificate rejected: ${String(rejected)}`, {
              cause: error,
            })
          : requireCert && /certificate/i.test(error.message)
            ? new AuthenticationError(`Client certificate rejected: ${error.message}`, {
                cause: error,
              })
            : error,
      );
      tlsSocket.destroy();
      rawOf(tlsSocket)?.destroy();
    });
    server.on("secureConnection", (tlsSocket: TLSSocket) => {
      const raw = rawOf(tlsSocket);
      const proceed = raw ? this.#tlsWaiting.get(raw) : undefined;
      if (raw) this.#tlsWaiting.delete(raw);
      if (proceed === undefined) {
        tlsSocket.destroy();
        return;
      }
      if (requireCert && !tlsSocket.authorized) {
        this.#report(
          new AuthenticationError(
            `Client certificate rejected: ${String(tlsSocket.authorizationError)}`,
          ),
        );
        tlsSocket.destroy();
        return;
      }
      tlsSocket.on("error", () => {}); // reported through the transport
      proceed(tlsSocket);
    });
    return server;
  }

  #transport(socket: Socket): SocketTransport {
    const options = this.#options;
    return new SocketTransport(socket, {
      maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
      ...(options.frameTimeout !== undefined && { frameTimeout: options.frameTimeout }),
      ...(options.idleTimeout !== undefined && { idleTimeout: options.idleTimeout }),
      ...(options.maxWriteBufferBytes !== undefined && {
        maxWriteBufferBytes: options.maxWriteBufferBytes,
      }),
    });
  }

  /** Starts serving an accepted (and, if required, authenticated) connection. */
  #start(
    socket: Socket,
    address: Address,
    leftover: Uint8Array[],
    existing: SocketTransport | undefined,
  ): void {
    const options = this.#options;
    const transport = existing ?? this.#transport(socket);
    const kind = address.kind;
    const remoteAddress =
      kind === "tcp" || kind === "tls"
        ? `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`
        : formatAddress(address);
    const connection: Connection<TClient> = new Connection<TClient>(
      `c${++this.#nextConnection}`,
      kind,
      remoteAddress,
      options.authKey !== undefined,
      socket instanceof TLSSocket ? peerCertificateOf(socket) : undefined,
    );
    const peer = new Peer({
      transport,
      local: this.#local,
      remote: this.#remote,
      connection,
      validate: options.validate ?? true,
      ...(options.timeout !== undefined && { timeout: options.timeout }),
      ...(options.maxBatchSize !== undefined && { maxBatchSize: options.maxBatchSize }),
      ...(options.maxInFlight !== undefined && { maxInFlight: options.maxInFlight }),
      ...(options.maxDepth !== undefined && { maxDepth: options.maxDepth }),
      ...(options.exposeErrors !== undefined && { exposeErrors: options.exposeErrors }),
      ...(options.onError !== undefined && { onError: options.onError }),
      ...(options.authorize !== undefined && { authorize: options.authorize }),
      onClose: this.#onPeerClose,
    });
    connection.attach(peer, transport);
    if (transport.closed) return;
    const heartbeat = options.heartbeat;
    if (heartbeat !== false) {
      connection.startHeartbeat({
        interval: heartbeat?.interval ?? DEFAULT_HEARTBEAT_INTERVAL,
        timeout: heartbeat?.timeout ?? DEFAULT_HEARTBEAT_TIMEOUT,
      });
    }
    this.#connections.add(connection);
    this.emit("connect", connection);
    for (const frame of leftover) peer.receive(frame);
  }

  #report(error: unknown): void {
    this.#options.onError?.(error, {
      phase: "transport",
      connection: { id: "server", transport: "server", remoteAddress: "", authenticated: false },
    });
  }
}

/**
 * Creates a server for the `server` half of `contract`, with a handler for each of its
 * methods and notifications. Call `listen(address)` to start it.
 *
 * @example
 * const server = createServer(files, {
 *   async write({ filename, content }) { return { written: await save(filename, content) }; },
 *   log({ line }, ctx) { console.log(ctx.connection.id, line); },
 * });
 * await server.listen("unix:/tmp/files.sock");
 */
export function createServer<TServer extends ContractSide, TClient extends ContractSide>(
  contract: Contract<TServer, TClient>,
  handlers: Handlers<TServer, TClient>,
  options?: ServerOptions,
): Server<TServer, TClient> {
  return new Server(contract, handlers, options);
}

/** Replaces a Unix socket file only when a connect probe finds nobody listening on it. */
async function removeStaleSocket(path: string): Promise<void> {
  let stat: ReturnType<typeof lstatSync>;
  try {
    stat = lstatSync(path);
  } catch {
    return; // nothing there
  }
  if (!stat.isSocket()) {
    throw Object.assign(
      new Error(
        `Cannot listen on ${path}: the path exists and is not a socket; remove it or pick another path`,
      ),
      { code: "EEXIST" },
    );
  }
  const live = await new Promise<boolean>((resolve) => {
    const probe = createConnection(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
  if (live) {
    throw Object.assign(
      new Error(`Cannot listen on ${path}: another server is listening there (EADDRINUSE)`),
      { code: "EADDRINUSE" },
    );
  }
  unlinkSync(path);
}

/** Binds a Unix socket readable and writable by its owner only (0600). */
async function listenOwnerOnly(net: NetServer, path: string): Promise<void> {
  // The socket file takes its mode from the umask at bind time: narrowing the umask around
  // the bind leaves no window in which another user could connect.
  let previous: number | undefined;
  try {
    previous = process.umask(0o177);
  } catch {
    // Worker threads cannot change the umask; the chmod below still narrows the mode.
  }
  const bound = new Promise<void>((resolve, reject) => {
    net.once("error", reject);
    net.once("listening", () => {
      net.off("error", reject);
      resolve();
    });
  });
  try {
    // Node binds a pipe synchronously inside listen(), so the umask is restored right after.
    net.listen(path);
  } finally {
    if (previous !== undefined) process.umask(previous);
  }
  await bound;
  if (process.platform !== "win32") chmodSync(path, 0o600);
}

/** Sends a final error frame to a connection refused before it started, then closes it. */
function refuseConnection(socket: Socket, code: number, message: string): void {
  socket.on("error", () => {});
  const frame = encodeFrame(Buffer.from(JSON.stringify(errorResponse(null, code, message))));
  // Whatever the peer sent is discarded (unread input would keep the socket from ever
  // closing), and the socket is destroyed once the frame is out, or after a second.
  socket.resume();
  socket.end(frame, () => socket.destroy());
  setTimeout(() => socket.destroy(), 1_000).unref();
}

/** A listener that ignores its event (a module-level function: a closure made inside a method would keep that method's whole scope alive with it). */
function ignore(): void {}
