import { EventEmitter } from "node:events";
import {
  AbortError,
  type CallArgs,
  type CallOptions,
  ConnectionClosedError,
  type ConnectionInfo,
  type Contract,
  type ContractSide,
  ErrorCodes,
  type Handlers,
  type InferItem,
  type InferResult,
  type MethodDef,
  type MethodNames,
  type NotificationNames,
  type NotifyArgs,
  type OpenRpcDocument,
  type RemoteApi,
  RpcError,
  type StreamArgs,
  type StreamNames,
  type StreamOptions,
  TimeoutError,
  ValidationError,
} from "@ezipc/contract";
import {
  createDispatchTable,
  createRemoteTable,
  DEFAULT_TIMEOUT,
  type DispatchTable,
  type ErrorReport,
  Peer,
  type RemoteTable,
} from "@ezipc/protocol";
import {
  type Address,
  type AuthOptions,
  formatAddress,
  parseAddress,
  type TlsOptions,
} from "@ezipc/protocol/node";
import { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from "./backoff.js";
import { type Dialed, dial, isPermanentFailure } from "./dial.js";
import {
  DEFAULT_HEARTBEAT_INTERVAL,
  DEFAULT_HEARTBEAT_TIMEOUT,
  Heartbeat,
  type HeartbeatOptions,
} from "./heartbeat.js";

export { DEFAULT_CONNECT_TIMEOUT } from "./dial.js";

/** The default most calls, notifications and streams that wait for a connection: 10,000. */
export const DEFAULT_MAX_QUEUED_CALLS = 10_000;

/**
 * How a client reconnects after losing its connection. Delays follow gRPC's
 * connection-backoff: see docs/reliability.md.
 */
export interface ReconnectOptions extends BackoffOptions {
  /**
   * Consecutive failed attempts after which the client gives up and closes; `Infinity`
   * tries for as long as the client is open (gRPC's behaviour).
   * @default Infinity
   */
  maxAttempts?: number;
  /**
   * While disconnected, calls (and notifications, streams) wait for the connection up to
   * their own timeout; `false` makes them fail at once with `ConnectionClosedError`
   * (gRPC's "fail fast").
   * @default true
   */
  waitForConnection?: boolean;
  /**
   * Most calls, notifications and streams waiting for a connection; past it new ones
   * fail at once with `ConnectionClosedError`.
   * @default 10_000
   */
  maxQueuedCalls?: number;
  /**
   * How many times a call of a method the contract marks `idempotent: true` is sent again
   * when the connection was lost while it was in flight (its outcome is unknown). `0`
   * never resends: the call rejects with `ConnectionClosedError`, like every other method.
   * @default 0
   */
  idempotentRetries?: number;
}

/** Options of {@link connect} that do not depend on the contract. */
export interface BaseConnectOptions extends AuthOptions {
  /**
   * TLS options for `tls://` addresses: `ca` to trust a private CA or a self-signed server,
   * `key` and `cert` for mutual TLS, `servername` to verify another name than the host.
   */
  tls?: TlsOptions;
  /** Default timeout of each call, in ms; `Infinity` or `0` waits forever. @default 30_000 */
  timeout?: number;
  /** Deadline for the connection to be established, in ms (each attempt). @default 10_000 */
  connectTimeout?: number;
  /**
   * Reconnect after the connection is lost unexpectedly or the server sends `rpc.goaway`:
   * `true` for the defaults, or the backoff and queueing to use. Off by default: a lost
   * connection closes the client, and later calls fail at once (see docs/reliability.md
   * for why). The first connection is never retried: `connect()` rejects when nobody is
   * listening.
   * @default false
   */
  reconnect?: boolean | ReconnectOptions;
  /**
   * Detect a silent server: after `interval` ms without receiving a byte, send `rpc.ping`;
   * with no answer within `timeout` ms the connection is declared dead (pending calls
   * reject, reconnecting starts). `false` turns it off.
   * @default { interval: 15_000, timeout: 20_000 }
   */
  heartbeat?: HeartbeatOptions | false;
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

/**
 * Where a {@link Client} stands: `connecting` (an attempt is under way), `connected`
 * (calls go out at once), `reconnecting` (the connection was lost or the server is going
 * away; the next attempt is scheduled), `closed` (for good).
 */
export type ClientState = "connecting" | "connected" | "reconnecting" | "closed";

/** What the `reconnecting` event tells about the attempt it schedules. */
export interface ReconnectAttempt {
  /** 1 for the first attempt after a connection was lost, then 2, 3, … */
  readonly attempt: number;
  /** Milliseconds until the attempt starts (0: at once). */
  readonly delay: number;
  /** Why: the previous attempt's failure, or what ended the connection. */
  readonly error: Error | undefined;
}

/** Events of a {@link Client}. */
export interface ClientEvents {
  /** The state changed. */
  state: [state: ClientState, previous: ClientState];
  /** A connection was established (the first one, and each reconnection). */
  connect: [connection: ConnectionInfo];
  /** A connection ended; `error` says why when it did not close on request. */
  disconnect: [error: Error | undefined];
  /** The server announced it is going away (`rpc.goaway`); no new calls go to it. */
  goaway: [reason: string | undefined];
  /** An attempt to reconnect is scheduled. */
  reconnecting: [attempt: ReconnectAttempt];
  /**
   * The client closed for good: `close()` was called (no error), or the connection was
   * lost without reconnect, or reconnecting stopped (an authentication failure,
   * `maxAttempts`): `error` says why.
   */
  close: [error: Error | undefined];
}

/** One connection of a client, from its establishment to its close. */
class Link {
  peer!: Peer;
  heartbeat: Heartbeat | undefined;
  readonly since = Date.now();
  /** Whether the peer was built and the client took the link over. */
  adopted = false;
  /** The close that arrived before the link was adopted. */
  early: { error: Error | undefined } | undefined;
  lost = false;
  /** The reason the server gave in its `rpc.goaway`, once it sent one ("" without one). */
  goaway: string | undefined;
  /** Our own `rpc.ping`s awaiting their answer: not the user's calls. */
  pings = 0;

  /** Sends `rpc.ping`, kept out of the client's `pendingCount`. */
  ping(timeout: number): Promise<void> {
    this.pings++;
    const settled = () => {
      this.pings--;
    };
    const answer = this.peer.ping(timeout);
    answer.then(settled, settled);
    return answer;
  }
}

/** A call, notification or stream waiting for a connection. */
interface Waiter {
  readonly method: string;
  resolve(link: Link): void;
  reject(error: Error): void;
}

interface Settings {
  readonly address: Address;
  readonly where: string;
  readonly options: BaseConnectOptions;
  readonly local: DispatchTable;
  readonly remote: RemoteTable;
  readonly idempotent: ReadonlySet<string>;
}

/**
 * A connection to an ezipc server, with typed `call` and `notify` for the contract's
 * `server` half. Create it with {@link connect}. With `reconnect` it survives the loss of
 * its connection: see {@link ClientState} and docs/reliability.md.
 */
export class Client<TServer extends ContractSide>
  extends EventEmitter<ClientEvents>
  implements RemoteApi<TServer>
{
  readonly #settings: Settings;
  readonly #timeout: number;
  readonly #reconnect: Required<Omit<ReconnectOptions, keyof BackoffOptions>> | undefined;
  readonly #initialDelay: number;
  readonly #backoff: Backoff;
  readonly #heartbeat: Required<HeartbeatOptions> | undefined;
  /** The link new calls go to: connected and not going away. */
  #link: Link | undefined;
  /** The most recent link, for `connection` and the errors of a closed client. */
  #last: Link | undefined;
  /** Every link still open, the current one and those draining after a goaway. */
  readonly #links = new Set<Link>();
  readonly #waiters = new Set<Waiter>();
  #state: ClientState = "connecting";
  #attempts = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #dialing: AbortController | undefined;
  /** Why the client closed, when it was not asked to. */
  #failure: Error | undefined;
  /** Set (without reconnect) once the server sent goaway: new calls are refused with it. */
  #refusal: RpcError | undefined;
  #closeError: Error | undefined;
  #closeRequested = false;
  #finished = false;
  readonly #closed: Promise<void>;
  #resolveClosed!: () => void;

  /** @internal use {@link connect} */
  constructor(settings: Settings) {
    super();
    this.#settings = settings;
    const options = settings.options;
    const timeout = options.timeout ?? DEFAULT_TIMEOUT;
    this.#timeout = timeout > 0 ? timeout : Number.POSITIVE_INFINITY;
    const reconnect =
      options.reconnect === true ? {} : options.reconnect === false ? undefined : options.reconnect;
    this.#reconnect =
      reconnect === undefined
        ? undefined
        : {
            maxAttempts: reconnect.maxAttempts ?? Number.POSITIVE_INFINITY,
            waitForConnection: reconnect.waitForConnection ?? true,
            maxQueuedCalls: reconnect.maxQueuedCalls ?? DEFAULT_MAX_QUEUED_CALLS,
            idempotentRetries: Math.max(0, reconnect.idempotentRetries ?? 0),
          };
    this.#backoff = new Backoff(reconnect ?? {});
    this.#initialDelay = reconnect?.initialDelay ?? DEFAULT_BACKOFF.initialDelay;
    this.#heartbeat =
      options.heartbeat === false
        ? undefined
        : {
            interval: options.heartbeat?.interval ?? DEFAULT_HEARTBEAT_INTERVAL,
            timeout: options.heartbeat?.timeout ?? DEFAULT_HEARTBEAT_TIMEOUT,
          };
    this.#closed = new Promise<void>((resolve) => {
      this.#resolveClosed = resolve;
    });
  }

  /** Facts about the current connection (or the last one, while there is none). */
  get connection(): ConnectionInfo {
    return (this.#link ?? this.#last)!.peer.connection;
  }

  /** Where the client stands: `connecting`, `connected`, `reconnecting` or `closed`. */
  get state(): ClientState {
    return this.#state;
  }

  /** Calls awaiting their result, including those waiting for a connection. */
  get pendingCount(): number {
    let count = this.#waiters.size;
    // (A ping that just settled leaves the peer's count a microtask before ours.)
    for (const link of this.#links) count += Math.max(0, link.peer.pendingCount - link.pings);
    return count;
  }

  /** Whether the client is closed for good (it will not reconnect). */
  get closed(): boolean {
    return this.#state === "closed";
  }

  /**
   * Calls a server method; resolves with its validated result.
   *
   * Rejects with `ValidationError` (params do not match the contract: nothing was sent;
   * or the result does not), `RpcError` (the server answered with an error),
   * `TimeoutError`, `AbortError` or `ConnectionClosedError`. A call is sent at most once;
   * while reconnecting it waits for the connection within its timeout.
   *
   * @example
   * const { written } = await client.call("write", { filename: "a.txt", content: "hi" }, { timeout: 5_000 });
   */
  call<K extends MethodNames<TServer>>(
    method: K,
    ...args: CallArgs<TServer, K>
  ): Promise<InferResult<TServer, K>> {
    const link = this.#link;
    const options = args[1] as CallOptions | undefined;
    // Without reconnect a call is the peer's alone; with it, the client may have to wait,
    // or to resend a refused call.
    if (link !== undefined && this.#reconnect === undefined) {
      return link.peer.call(method, args[0], options) as Promise<InferResult<TServer, K>>;
    }
    return this.#callSlowly(method, args[0], options) as Promise<InferResult<TServer, K>>;
  }

  /**
   * Opens a server stream; iterate it with `for await`. Items are validated; a slow loop
   * makes the server's generator wait (flow control). Leaving the loop early stops the
   * generator and runs its `finally`. A stream is not resumed after a lost connection:
   * its loop throws `ConnectionClosedError`.
   *
   * @example
   * for await (const row of client.stream("rows", { table: "users" })) console.log(row);
   */
  stream<K extends StreamNames<TServer>>(
    method: K,
    ...args: StreamArgs<TServer, K>
  ): AsyncIterable<InferItem<TServer, K>> {
    const params = args[0];
    const options = args[1] as StreamOptions | undefined;
    return {
      [Symbol.asyncIterator]: () => {
        const link = this.#link;
        if (link !== undefined) {
          return link.peer.stream(method, params, options)[Symbol.asyncIterator]();
        }
        return this.#deferredStream(method, params, options);
      },
    } as AsyncIterable<InferItem<TServer, K>>;
  }

  /**
   * Sends a notification; resolves once it was written to the socket. While reconnecting
   * it waits for the connection up to the client's `timeout`.
   */
  notify<K extends NotificationNames<TServer>>(
    method: K,
    ...args: NotifyArgs<TServer, K>
  ): Promise<void> {
    const link = this.#link;
    if (link !== undefined) return link.peer.notify(method, args[0]);
    return this.#notifySlowly(method, args[0]);
  }

  /**
   * Asks the server for the OpenRPC document of what it serves (`rpc.discover`): names,
   * JSON Schemas of params and results, which entries are notifications and streams.
   */
  discover(timeout?: number): Promise<OpenRpcDocument> {
    const link = this.#link;
    if (link === undefined) {
      return Promise.reject(new ConnectionClosedError("Not connected: cannot discover"));
    }
    return link.peer.discover(timeout);
  }

  /**
   * Closes the client: stops reconnecting, writes what is queued on the connection (queued
   * notifications included), then closes it. Pending calls reject with
   * `ConnectionClosedError`, and so do calls still waiting for a connection. Resolves once
   * the socket is closed.
   */
  close(): Promise<void> {
    if (this.#state !== "closed") this.#closeRequested = true;
    this.#terminate(undefined, undefined);
    return this.#closed;
  }

  /** `await using client = await connect(…)` closes it at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** @internal the first connection: rejects when it cannot be established. */
  async open(): Promise<void> {
    const controller = new AbortController();
    this.#dialing = controller;
    let dialed: Dialed;
    try {
      dialed = await dial(
        this.#settings.address,
        this.#settings.where,
        this.#settings.options,
        controller.signal,
      );
    } finally {
      this.#dialing = undefined;
    }
    this.#attach(dialed);
  }

  #retries(method: string): boolean {
    return (
      this.#reconnect !== undefined &&
      this.#reconnect.idempotentRetries > 0 &&
      this.#settings.idempotent.has(method)
    );
  }

  /**
   * A call on a reconnecting client, or one made while disconnected: waits for a
   * connection within its timeout, and sends it again only when that is known to be safe.
   */
  async #callSlowly(
    method: string,
    params: unknown,
    options: CallOptions | undefined,
  ): Promise<unknown> {
    const entry = this.#settings.remote.get(method);
    if (entry === undefined || entry.kind !== "method") {
      throw new TypeError(`"${method}" is not a method of the other side's contract`);
    }
    const timeout = effectiveTimeout(options?.timeout, this.#timeout);
    const started = Date.now();
    let retries = this.#retries(method) ? this.#reconnect!.idempotentRetries : 0;
    for (;;) {
      let link = this.#link;
      let rest = options;
      if (link === undefined || Date.now() > started) {
        // Whatever time went by counts against the call's timeout.
        const remaining = timeout - (Date.now() - started);
        if (remaining <= 0) throw timedOut("Call", method, timeout, this.#settings.where);
        link ??= await this.#waitForLink(
          "Call",
          method,
          params,
          remaining,
          options?.signal,
          timeout,
        );
        // Handed a connection that is already going (a goaway in the same read): wait again.
        if (link.lost || link.goaway !== undefined) continue;
        if (timeout !== Number.POSITIVE_INFINITY) {
          const left = timeout - (Date.now() - started);
          if (left <= 0) throw timedOut("Call", method, timeout, this.#settings.where);
          rest = { ...options, timeout: left };
        }
      }
      try {
        return await link.peer.call(method, params, rest);
      } catch (error) {
        if (this.#state === "closed" || this.#reconnect === undefined) throw error;
        // Refused by a server that is going away (-32005 after its rpc.goaway): the call
        // never ran there, so it goes to the next server, whatever the method.
        if (
          error instanceof RpcError &&
          error.code === ErrorCodes.ShuttingDown &&
          link.goaway !== undefined
        ) {
          continue;
        }
        // In flight when the connection was lost: the server may or may not have run it.
        // Only a method the contract declares idempotent may be sent again.
        if (error instanceof ConnectionClosedError && retries-- > 0) continue;
        throw error;
      }
    }
  }

  async #notifySlowly(method: string, params: unknown): Promise<void> {
    const entry = this.#settings.remote.get(method);
    if (entry === undefined || entry.kind !== "notification") {
      throw new TypeError(`"${method}" is not a notification of the other side's contract`);
    }
    const link = await this.#waitForLink("Notification", method, params, this.#timeout);
    return link.peer.notify(method, params);
  }

  #deferredStream(
    method: string,
    params: unknown,
    options: StreamOptions | undefined,
  ): AsyncIterator<unknown> {
    const timeout = effectiveTimeout(options?.timeout, Number.POSITIVE_INFINITY);
    const deadline = Date.now() + timeout;
    let inner: AsyncIterator<unknown> | undefined;
    let opening: Promise<AsyncIterator<unknown>> | undefined;
    let returned = false;
    const open = () => {
      const entry = this.#settings.remote.get(method);
      if (entry === undefined || entry.kind !== "stream") {
        return Promise.reject(
          new TypeError(`"${method}" is not a stream of the other side's contract`),
        );
      }
      opening ??= this.#waitForLink("Stream", method, params, timeout, options?.signal).then(
        (link) => {
          const remaining = deadline - Date.now();
          if (remaining <= 0) throw timedOut("Stream", method, timeout, this.#settings.where);
          const rest =
            timeout === Number.POSITIVE_INFINITY ? options : { ...options, timeout: remaining };
          inner = link.peer.stream(method, params, rest)[Symbol.asyncIterator]();
          return inner;
        },
      );
      return opening;
    };
    return {
      next: () => {
        if (returned) return Promise.resolve({ value: undefined, done: true });
        return inner !== undefined ? inner.next() : open().then((it) => it.next());
      },
      return: async (value?: unknown) => {
        returned = true;
        if (inner?.return !== undefined) return inner.return(value);
        return { value: undefined, done: true };
      },
    };
  }

  /**
   * Resolves with the next usable connection, within `timeout` ms; rejects at once when
   * the client is closed, does not reconnect, fails fast, or has too many waiting.
   */
  #waitForLink(
    kind: "Call" | "Notification" | "Stream",
    method: string,
    params: unknown,
    timeout: number,
    signal?: AbortSignal,
    reported = timeout,
  ): Promise<Link> {
    const where = this.#settings.where;
    const failure = this.#unavailable(method);
    if (failure !== undefined) return Promise.reject(failure);
    if (signal?.aborted) return Promise.reject(aborted(kind, method, signal));
    const invalid = this.#checkParams(method, params);
    if (invalid !== undefined) return Promise.reject(invalid);
    const reconnect = this.#reconnect!;
    if (!reconnect.waitForConnection) {
      return Promise.reject(
        new ConnectionClosedError(
          `${kind} "${method}" not sent: not connected to ${where} (${this.#state}; waitForConnection is false)`,
        ),
      );
    }
    if (this.#waiters.size >= reconnect.maxQueuedCalls) {
      return Promise.reject(
        new ConnectionClosedError(
          `${kind} "${method}" not sent: not connected to ${where} and ${reconnect.maxQueuedCalls} ` +
            "calls already wait for the connection (maxQueuedCalls)",
        ),
      );
    }
    return new Promise<Link>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = () => {
        done();
        reject(aborted(kind, method, signal!));
      };
      const done = () => {
        this.#waiters.delete(waiter);
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const waiter: Waiter = {
        method,
        resolve: (link) => {
          done();
          resolve(link);
        },
        reject: (error) => {
          done();
          reject(error);
        },
      };
      this.#waiters.add(waiter);
      if (timeout !== Number.POSITIVE_INFINITY) {
        timer = setTimeout(() => {
          done();
          reject(timedOut(kind, method, reported, where));
        }, timeout);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Why a call cannot wait for a connection, if it cannot. */
  #unavailable(method: string): Error | undefined {
    if (this.#state === "closed") return this.#closedError(method);
    if (this.#reconnect === undefined) {
      // Without reconnect the only way to be disconnected yet open is a goaway.
      return (
        this.#refusal ??
        new ConnectionClosedError(`Not connected: "${method}" was not sent`, {
          cause: this.#closeError,
        })
      );
    }
    return undefined;
  }

  /** Validates params before a call waits, so a bad call fails now rather than at its timeout. */
  #checkParams(method: string, params: unknown): ValidationError | undefined {
    if (this.#settings.options.validate === false) return undefined;
    const schema = this.#settings.remote.get(method)?.params;
    if (schema === undefined) return undefined;
    const checked = schema.check(params);
    // An async schema is checked when the call is sent.
    if (checked instanceof Promise || checked.success) return undefined;
    return new ValidationError(
      `Params of "${method}" do not match the contract`,
      checked.issues,
      "params",
    );
  }

  #closedError(method: string): Error {
    if (this.#failure !== undefined) {
      return new ConnectionClosedError(
        `"${method}" not sent: the client stopped reconnecting to ${this.#settings.where}: ${this.#failure.message}`,
        { cause: this.#failure },
      );
    }
    return new ConnectionClosedError(`"${method}" not sent: the client is closed`, {
      cause: this.#closeError,
    });
  }

  #setState(state: ClientState): void {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.emit("state", state, previous);
  }

  /** Builds the peer of a new connection and makes it the one calls go to. */
  #attach(dialed: Dialed): void {
    const options = this.#settings.options;
    const link = new Link();
    link.peer = new Peer({
      transport: dialed.transport,
      local: this.#settings.local,
      remote: this.#settings.remote,
      connection: dialed.connection,
      validate: options.validate ?? true,
      ...(options.timeout !== undefined && { timeout: options.timeout }),
      ...(options.maxBatchSize !== undefined && { maxBatchSize: options.maxBatchSize }),
      ...(options.maxInFlight !== undefined && { maxInFlight: options.maxInFlight }),
      ...(options.maxDepth !== undefined && { maxDepth: options.maxDepth }),
      ...(options.onError !== undefined && { onError: options.onError }),
      onClose: (error) => {
        if (link.adopted) this.#lost(link, error);
        else link.early = { error };
      },
      onGoaway: (reason) => this.#goaway(link, reason),
    });
    link.adopted = true;
    this.#links.add(link);
    this.#link = link;
    this.#last = link;
    this.#attempts = 0;
    this.#setState("connected");
    this.emit("connect", dialed.connection);
    for (const frame of dialed.leftover) link.peer.receive(frame);
    if (link.early !== undefined) {
      this.#lost(link, link.early.error);
      return;
    }
    if (this.#reconnect !== undefined && !link.lost) {
      // One rpc.ping up front: the server learns we speak ezipc, so it tells us of its
      // shutdowns with rpc.goaway (a server says nothing unsolicited to a plain JSON-RPC
      // client). Its answer, or the lack of one, is the heartbeat's business.
      link.ping(this.#heartbeat?.timeout ?? DEFAULT_HEARTBEAT_TIMEOUT).catch(() => undefined);
    }
    const heartbeat = this.#heartbeat;
    if (heartbeat !== undefined && !link.lost) {
      link.heartbeat = new Heartbeat(heartbeat, link, dialed.transport);
    }
    if (this.#link === link) this.#flush(link);
  }

  /** Hands every waiting call to a new connection, in the order they were made. */
  #flush(link: Link): void {
    if (this.#waiters.size === 0) return;
    const waiters = [...this.#waiters];
    for (const waiter of waiters) waiter.resolve(link);
  }

  #goaway(link: Link, reason: string | undefined): void {
    link.goaway = reason ?? "";
    this.emit("goaway", reason);
    if (this.#link !== link || this.#state === "closed") return;
    this.#link = undefined;
    const why = new RpcError(
      ErrorCodes.ShuttingDown,
      `Server is shutting down (rpc.goaway${reason === undefined ? "" : `: ${reason}`})`,
    );
    if (this.#reconnect === undefined) {
      this.#refusal = why;
      return;
    }
    this.#afterLoss(link, why);
  }

  #lost(link: Link, error: Error | undefined): void {
    if (link.lost) return;
    link.lost = true;
    link.heartbeat?.stop();
    this.#links.delete(link);
    if (error !== undefined) this.#closeError = error;
    this.emit("disconnect", error);
    const current = this.#link === link;
    if (current) this.#link = undefined;
    if (this.#state === "closed") {
      this.#finish();
      return;
    }
    if (this.#reconnect === undefined) {
      if (this.#link === undefined && this.#links.size === 0) this.#terminate(error, undefined);
      return;
    }
    if (current) this.#afterLoss(link, error);
  }

  /** Schedules reconnecting once `link` stopped taking calls (lost, or going away). */
  #afterLoss(link: Link, error: Error | undefined): void {
    // A connection that lasted gets an immediate first attempt, as in gRPC; one that died
    // young (a crash loop, a refusal) keeps backing off instead of hammering the server.
    if (Date.now() - link.since >= this.#initialDelay) {
      this.#backoff.reset();
      this.#schedule(0, error);
    } else {
      this.#schedule(this.#backoff.next(), error);
    }
  }

  #schedule(delay: number, error: Error | undefined): void {
    if (this.#timer !== undefined || this.#dialing !== undefined || this.#state === "closed") {
      return;
    }
    if (this.#attempts >= this.#reconnect!.maxAttempts) {
      const failure = new ConnectionClosedError(
        `Could not reconnect to ${this.#settings.where} after ${this.#attempts} attempts` +
          (error === undefined ? "" : `: ${error.message}`),
        { cause: error },
      );
      this.#terminate(failure, failure);
      return;
    }
    this.#attempts++;
    this.#setState("reconnecting");
    this.emit("reconnecting", { attempt: this.#attempts, delay, error });
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#redial();
    }, delay);
  }

  #redial(): void {
    if (this.#state === "closed") return;
    this.#setState("connecting");
    const started = Date.now();
    const controller = new AbortController();
    this.#dialing = controller;
    dial(
      this.#settings.address,
      this.#settings.where,
      this.#settings.options,
      controller.signal,
    ).then(
      (dialed) => {
        this.#dialing = undefined;
        if (this.#state === "closed") {
          dialed.transport.destroy();
          return;
        }
        this.#attach(dialed);
      },
      (error: Error) => {
        this.#dialing = undefined;
        if (this.#state === "closed") return;
        if (isPermanentFailure(error)) {
          this.#terminate(error, error);
          return;
        }
        // The delay counts from the start of the failed attempt (gRPC): an attempt that
        // took long to fail is followed sooner.
        this.#schedule(Math.max(0, started + this.#backoff.next() - Date.now()), error);
      },
    );
  }

  /**
   * Closes for good: `error` is what the `close` event reports, `failure` why reconnecting
   * stopped (then shown in the errors of calls that can no longer be sent).
   */
  #terminate(error: Error | undefined, failure: Error | undefined): void {
    if (this.#state === "closed") return;
    this.#failure = failure;
    if (error !== undefined) this.#closeError = error;
    this.#setState("closed");
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#dialing?.abort();
    this.#dialing = undefined;
    this.#link = undefined;
    for (const waiter of [...this.#waiters]) waiter.reject(this.#closedError(waiter.method));
    for (const link of this.#links) {
      link.heartbeat?.stop();
      link.peer.close();
    }
    this.#finish();
  }

  /** Reports the close once the last connection is gone. */
  #finish(): void {
    if (this.#finished || this.#links.size > 0) return;
    this.#finished = true;
    this.#resolveClosed();
    // A close the user asked for reports no error; otherwise say why it closed.
    this.emit("close", this.#closeRequested ? undefined : (this.#failure ?? this.#closeError));
  }
}

/**
 * Connects to an ezipc server and resolves once the connection is ready. Rejects when the
 * server cannot be reached or refuses the handshake, with or without `reconnect`.
 *
 * @example
 * const client = await connect(files, "unix:/tmp/files.sock", { reconnect: true });
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
  const idempotent = new Set<string>();
  for (const [name, def] of Object.entries(contract.server)) {
    if (def.kind === "method" && (def as MethodDef).idempotent) idempotent.add(name);
  }
  const client = new Client<TServer>({
    address: parsed,
    where: formatAddress(parsed),
    options: opts,
    local,
    remote,
    idempotent,
  });
  await client.open();
  return client;
}

function effectiveTimeout(timeout: number | undefined, fallback: number): number {
  if (timeout === undefined) return fallback;
  return timeout > 0 ? timeout : Number.POSITIVE_INFINITY;
}

function timedOut(kind: string, method: string, timeout: number, where: string): TimeoutError {
  return new TimeoutError(
    `${kind} "${method}" timed out after ${timeout} ms waiting for a connection to ${where}; it was not sent`,
    timeout,
  );
}

function aborted(kind: string, method: string, signal: AbortSignal): AbortError {
  return new AbortError(`${kind} "${method}" was aborted before it was sent`, {
    cause: signal.reason,
  });
}
