import {
  AbortError,
  AuthenticationError,
  type CallOptions,
  ConnectionClosedError,
  type ConnectionInfo,
  ErrorCodes,
  FrameTooLargeError,
  type OpenRpcDocument,
  RpcError,
  type StreamOptions,
  TimeoutError,
  ValidationError,
  type ValidationIssue,
  type Validator,
} from "@ezipc/contract";

import pTimeout from "p-timeout";
import { abortInbound, Context } from "./context.js";
import { Deadlines } from "./deadlines.js";
import {
  type DispatchTable,
  describeTable,
  type LocalEntry,
  type RemoteEntry,
  type RemoteTable,
} from "./dispatch.js";
import {
  deeperThan,
  errorResponse,
  isValidId,
  type RequestId,
  type RequestMeta,
  type ResponseMessage,
  requestHead,
  requestTail,
  requestText,
} from "./message.js";
import { PendingCall } from "./pending.js";
import { RunningCalls } from "./running.js";
import { SlotTable } from "./slots.js";
import { DEFAULT_STREAM_WINDOW, StreamConsumer } from "./stream.js";
import type { Transport, TransportEvents } from "./transport.js";

/** The default call timeout: 30 s. */
export const DEFAULT_TIMEOUT = 30_000;
/** The default largest batch accepted: 100 entries. */
export const DEFAULT_MAX_BATCH_SIZE = 100;
/** The default number of handlers that may run at once per connection: 1,024. */
export const DEFAULT_MAX_IN_FLIGHT = 1024;
/** The default deepest JSON nesting accepted: 64 levels. */
export const DEFAULT_MAX_DEPTH = 64;

/** Where an error reported to `onError` came from. */
export interface ErrorReport {
  /** What was going on: a handler threw, a result failed its schema, a message was malformed, … */
  readonly phase: "handler" | "result" | "receive" | "send" | "transport";
  /** The method concerned, when known. */
  readonly method?: string;
  /** The request id concerned, when known. */
  readonly id?: RequestId | null;
  /** The connection it happened on. */
  readonly connection: ConnectionInfo;
}

/** Options of a {@link Peer}; the server and client pass most of them through from users. */
export interface PeerOptions {
  /** The connection the peer talks over. */
  transport: Transport;
  /** What this side serves (compiled with `createDispatchTable`). */
  local: DispatchTable;
  /** What the other side serves (compiled with `createRemoteTable`). */
  remote: RemoteTable;
  /** Facts about the connection, handed to handlers as `ctx.connection`. */
  connection: ConnectionInfo;
  /**
   * Default call timeout in milliseconds; `Infinity` or `0` disables it.
   * @default 30_000
   */
  timeout?: number;
  /**
   * Validate params and results against the contract. Turning it off trusts the peer.
   * @default true
   */
  validate?: boolean;
  /** @default 100 */
  maxBatchSize?: number;
  /** Handlers running at once on this connection; more calls are refused with -32003. @default 1024 */
  maxInFlight?: number;
  /** Deepest JSON nesting accepted in a message, checked before validation. @default 64 */
  maxDepth?: number;
  /** Send handler error messages and stacks to the peer (development only). @default false */
  exposeErrors?: boolean;
  /**
   * Decides whether a call may run, after its params were validated: return `true` to
   * allow it; `false` refuses it with -32004 Unauthorized; a thrown (or returned)
   * `RpcError` is sent as it is. Notifications that are refused are dropped.
   */
  authorize?: Authorize;
  /** Receives every error that is not the caller's to see (handler throws, bad input, …). */
  onError?: (error: unknown, report: ErrorReport) => void;
  /**
   * Called once when the connection is gone, after every pending call was rejected; with
   * the peer's `connection`, so one function can serve every connection of a server.
   */
  onClose?: (error: Error | undefined, connection: ConnectionInfo) => void;
  /**
   * Called when the other side announces it is going away (`rpc.goaway`): send no new
   * calls on this connection; calls in flight still get their answers.
   */
  onGoaway?: (reason: string | undefined) => void;
}

/** The authorization hook: see {@link PeerOptions.authorize}. */
export type Authorize = (call: {
  readonly connection: ConnectionInfo;
  readonly method: string;
  readonly params: unknown;
}) => boolean | RpcError | Promise<boolean | RpcError>;

/** What the peer tracks of a running handler: its context (see {@link Context}). */
type InboundCall = Context;

const textDecoder = new TextDecoder("utf-8", { fatal: true });

/** From this many characters on, a params or result JSON is sent without joining it. */
const LARGE_BODY = 32 * 1024;

/** Set in `Peer`'s static block, where it may reach the peer's private members. */
let PeerEvents: new (peer: Peer) => TransportEvents;

/**
 * The symmetric call/dispatch engine on one connection: either side calls, notifies and
 * serves. It speaks JSON-RPC 2.0 over a {@link Transport} and knows nothing of sockets,
 * listening or reconnecting.
 */
export class Peer {
  readonly #transport: Transport;
  readonly #local: DispatchTable;
  readonly #remote: RemoteTable;
  readonly #connection: ConnectionInfo;
  readonly #timeout: number;
  readonly #validate: boolean;
  readonly #maxBatch: number;
  readonly #maxInFlight: number;
  readonly #maxDepth: number;
  readonly #exposeErrors: boolean;
  readonly #onError: PeerOptions["onError"];
  readonly #authorize: Authorize | undefined;
  readonly #onClose: PeerOptions["onClose"];
  readonly #onGoaway: PeerOptions["onGoaway"];
  readonly #pending = new SlotTable<PendingCall>();
  // Created on first use: an idle connection holds as little as possible.
  #deadlines: Deadlines | undefined;
  /**
   * Running handlers that outlived their tick: requests by id, notifications and streams
   * by their context, so a cancel finds one and a lost connection aborts them all.
   */
  #inbound: RunningCalls | undefined;
  /** Our request ids: a counter per connection (JSON-RPC needs them unique per connection). */
  #nextId = 1;
  #running = 0;
  #closed = false;
  #draining = false;
  #speaksEzipc = false;
  #remoteError: Error | undefined;
  #closeError: Error | undefined;
  #idle: Set<() => void> | undefined;

  constructor(options: PeerOptions) {
    this.#transport = options.transport;
    this.#local = options.local;
    this.#remote = options.remote;
    this.#connection = options.connection;
    const timeout = options.timeout ?? DEFAULT_TIMEOUT;
    this.#timeout = timeout > 0 ? timeout : Number.POSITIVE_INFINITY;
    this.#validate = options.validate ?? true;
    this.#maxBatch = options.maxBatchSize ?? DEFAULT_MAX_BATCH_SIZE;
    this.#maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    this.#maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
    this.#exposeErrors = options.exposeErrors ?? false;
    this.#onError = options.onError;
    this.#authorize = options.authorize;
    this.#onClose = options.onClose;
    this.#onGoaway = options.onGoaway;
    this.#transport.start(new PeerEvents(this));
  }

  static {
    // What the transport reports, as one small object per connection (three closures and
    // their context would cost an idle server connection ~200 bytes more).
    PeerEvents = class implements TransportEvents {
      readonly #peer: Peer;
      constructor(peer: Peer) {
        this.#peer = peer;
      }
      frame(payload: Uint8Array): void {
        try {
          this.#peer.receive(payload);
        } catch (error) {
          // A bug of ours must cost one message, never the process.
          this.#peer.#report(error, { phase: "receive" });
        }
      }
      frameError(error: Error & { code: number }, fatal: boolean): void {
        const peer = this.#peer;
        if (fatal) {
          peer.#report(error, { phase: "transport" });
          return;
        }
        peer.#report(error, { phase: "receive" });
        peer.#sendResponse(errorResponse(null, error.code, error.message));
      }
      close(error?: Error): void {
        this.#peer.#handleClose(error);
      }
    };
  }

  /** The connection this peer talks over. */
  get connection(): ConnectionInfo {
    return this.#connection;
  }

  /** Calls awaiting a response from the other side. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /** Handlers of ours still running for the other side. */
  get runningCount(): number {
    return this.#running;
  }

  /**
   * Whether the other side has shown it speaks ezipc (it sent an `rpc.*` message or a
   * request with ezipc's `ezipc` member). Only such a peer is sent unsolicited messages
   * (`rpc.ping`, `rpc.goaway`): a plain JSON-RPC client would read one as the answer to
   * its own call.
   */
  get speaksEzipc(): boolean {
    return this.#speaksEzipc;
  }

  /** Whether the connection is gone. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Calls `method` on the other side. Rejects with `ValidationError` (params did not match
   * the contract; nothing was sent), `RpcError` (the other side answered with an error),
   * `TimeoutError`, `AbortError` or `ConnectionClosedError`.
   */
  call(method: string, params?: unknown, options?: CallOptions): Promise<unknown> {
    if (this.#closed) return Promise.reject(this.#closedError(method));
    const entry = this.#remote.get(method);
    if (entry === undefined || entry.kind !== "method") {
      return Promise.reject(
        new TypeError(`"${method}" is not a method of the other side's contract`),
      );
    }
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(abortError(method, signal));
    let checked: unknown;
    try {
      checked = this.#checkOutgoing(entry.params, params, method);
    } catch (error) {
      return Promise.reject(error);
    }
    if (checked instanceof Promise) {
      return checked.then((value) => this.#send(entry, value, options));
    }
    return this.#send(entry, checked, options);
  }

  /**
   * Opens a stream on the other side: iterate the result with `for await`. The request is
   * sent when iteration starts; leaving the loop early cancels the remote generator.
   */
  stream(method: string, params?: unknown, options?: StreamOptions): AsyncIterable<unknown> {
    return { [Symbol.asyncIterator]: () => this.#openStream(method, params, options) };
  }

  #openStream(
    method: string,
    params: unknown,
    options: StreamOptions | undefined,
  ): AsyncIterator<unknown> {
    const failed = (error: Error): AsyncIterator<unknown> => ({
      next: () => Promise.reject(error),
      return: () => Promise.resolve({ value: undefined, done: true }),
    });
    if (this.#closed) return failed(this.#closedError(method));
    const entry = this.#remote.get(method);
    if (entry === undefined || entry.kind !== "stream") {
      return failed(new TypeError(`"${method}" is not a stream of the other side's contract`));
    }
    const signal = options?.signal;
    if (signal?.aborted) return failed(abortError(method, signal));
    const window = Math.max(1, Math.floor(options?.window ?? DEFAULT_STREAM_WINDOW));
    const id = this.#nextId++;
    const timeout = options?.timeout ?? 0;
    const consumer = new StreamConsumer(method, window, entry.item, {
      grant: (n) => {
        if (this.#pending.get(id) !== undefined) {
          this.#sendNotification("rpc.stream.credit", { id, credit: n });
        }
      },
      cancel: () => {
        if (this.#take(id) !== undefined) this.#sendCancel(id);
      },
    });
    // The stream's end (the response) and failures reach the consumer through its pending
    // entry, like a call's; a deadline and an abort work as for calls.
    const pending = new PendingCall(id, method, undefined, timeout, {
      resolve: () => consumer.resolve(),
      reject: (error) => consumer.reject(error),
    });
    pending.consumer = consumer;
    const start = (value: unknown) => {
      if (this.#closed) {
        consumer.reject(this.#closedError(method));
        return;
      }
      this.#pending.set(id, pending);
      try {
        this.#transport.send(requestText(id, entry.quoted, value, undefined, undefined, window));
      } catch (error) {
        this.#take(id);
        consumer.reject(this.#wrapSendError(error, method));
        return;
      }
      if (timeout > 0 && timeout !== Number.POSITIVE_INFINITY)
        this.#deadlineQueue().add(timeout, id);
      if (signal !== undefined) {
        pending.signal = signal;
        pending.onAbort = () => {
          if (this.#take(id) !== undefined) {
            this.#sendCancel(id);
            consumer.reject(abortError(method, signal));
          }
        };
        signal.addEventListener("abort", pending.onAbort, { once: true });
      }
    };
    try {
      const checked = this.#checkOutgoing(entry.params, params, method);
      if (checked instanceof Promise) checked.then(start, (error: Error) => consumer.reject(error));
      else start(checked);
    } catch (error) {
      return failed(error as Error);
    }
    return consumer;
  }

  /** Sends a notification; resolves once it was handed to the operating system. */
  notify(method: string, params?: unknown): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError(method));
    const entry = this.#remote.get(method);
    if (entry === undefined || entry.kind !== "notification") {
      return Promise.reject(
        new TypeError(`"${method}" is not a notification of the other side's contract`),
      );
    }
    let checked: unknown;
    try {
      checked = this.#checkOutgoing(entry.params, params, method);
    } catch (error) {
      return Promise.reject(error);
    }
    return checked instanceof Promise
      ? checked.then((value) => this.#sendNotify(entry, value))
      : this.#sendNotify(entry, checked);
  }

  #sendNotify(entry: RemoteEntry, params: unknown): Promise<void> {
    try {
      const json = params === undefined ? undefined : JSON.stringify(params);
      if (json === undefined) this.#transport.send(`{"jsonrpc":"2.0","method":${entry.quoted}}`);
      else this.#sendJoined(`{"jsonrpc":"2.0","method":${entry.quoted},"params":`, json, "}");
    } catch (error) {
      return Promise.reject(this.#wrapSendError(error, entry.name));
    }
    return this.#transport.flushed();
  }

  /**
   * Closes the connection gracefully: queued frames are written first. Pending calls
   * reject with `ConnectionClosedError`; running handlers see `ctx.signal` abort.
   */
  close(): void {
    this.#transport.close();
  }

  /**
   * Checks the other side is alive: sends `rpc.ping` and resolves once it answers.
   * Rejects with `TimeoutError` after `timeout` ms, or `ConnectionClosedError`.
   */
  ping(timeout = this.#timeout): Promise<void> {
    return this.#send(PING, undefined, { timeout }).then(() => undefined);
  }

  /**
   * Asks the other side for the OpenRPC document of what it serves (`rpc.discover`).
   * Rejects with `RpcError` -32601 when the other side does not support discovery.
   */
  discover(timeout = this.#timeout): Promise<OpenRpcDocument> {
    return this.#send(DISCOVER, undefined, { timeout }) as Promise<OpenRpcDocument>;
  }

  /** Tells the other side we are going away (`rpc.goaway`): it should send no new calls here. */
  goaway(reason?: string): void {
    this.#sendNotification("rpc.goaway", reason === undefined ? {} : { reason });
  }

  /**
   * Stops taking new work: requests are answered with -32005 (shutting down) and
   * notifications are dropped; running handlers finish. Calls of ours are unaffected.
   */
  drain(): void {
    this.#draining = true;
  }

  /** Resolves once no handler of ours is running (for graceful shutdown). */
  whenIdle(): Promise<void>;
  /** …or until `timeout` ms passed: resolves `true` when idle, `false` at the timeout. */
  whenIdle(timeout: number): Promise<boolean>;
  whenIdle(timeout?: number): Promise<void | boolean> {
    const idle =
      this.#running === 0
        ? Promise.resolve()
        : new Promise<void>((resolve) => this.#idleWaiters().add(resolve));
    if (timeout === undefined) return idle;
    return pTimeout(
      idle.then(() => true),
      { milliseconds: timeout, fallback: () => false },
    );
  }

  /** Feeds one received frame's payload (the transport calls it; exposed for tests). */
  receive(payload: Uint8Array): void {
    let message: unknown;
    try {
      message = JSON.parse(
        this.#transport.decodeText
          ? this.#transport.decodeText(payload)
          : textDecoder.decode(payload),
      );
    } catch (error) {
      if (startsWith(payload, CHALLENGE)) {
        // The other side opened an authentication handshake we were not configured for.
        const auth = new AuthenticationError(
          "The peer requires authentication: set the same authKey on both sides",
        );
        this.#report(auth, { phase: "receive" });
        this.#transport.destroy(auth);
        return;
      }
      const invalidUtf8 = error instanceof TypeError;
      this.#report(error, { phase: "receive" });
      this.#sendResponse(
        errorResponse(
          null,
          ErrorCodes.ParseError,
          "Parse error",
          invalidUtf8 ? { reason: "frame is not valid UTF-8" } : undefined,
        ),
      );
      return;
    }
    if (Array.isArray(message)) {
      this.#receiveBatch(message);
      return;
    }
    if (deeperThan(message, this.#maxDepth)) {
      this.#rejectTooDeep(message);
      return;
    }
    const response = this.#receiveOne(message);
    if (response === undefined) return;
    if (response instanceof Promise) {
      response.then((r) => r && this.#sendResponse(r));
    } else {
      this.#sendResponse(response);
    }
  }

  #receiveBatch(batch: unknown[]): void {
    if (batch.length === 0) {
      this.#sendResponse(errorResponse(null, ErrorCodes.InvalidRequest, "Invalid Request"));
      return;
    }
    if (batch.length > this.#maxBatch) {
      this.#sendResponse(
        errorResponse(null, ErrorCodes.BatchTooLarge, `Batch too large`, {
          size: batch.length,
          limit: this.#maxBatch,
        }),
      );
      return;
    }
    if (deeperThan(batch, this.#maxDepth + 1)) {
      this.#rejectTooDeep(undefined);
      return;
    }
    const results: (ResponseMessage | undefined | Promise<ResponseMessage | undefined>)[] = [];
    let async = false;
    for (const item of batch) {
      const r = this.#receiveOne(item);
      if (r instanceof Promise) async = true;
      results.push(r);
    }
    const send = (responses: (ResponseMessage | undefined)[]) => {
      const present = responses.filter((r): r is ResponseMessage => r !== undefined);
      // An all-notification batch (or a batch of responses to us) gets no reply at all.
      if (present.length > 0) this.#sendResponse(present);
    };
    if (async) {
      Promise.all(results).then(send);
    } else {
      send(results as (ResponseMessage | undefined)[]);
    }
  }

  #rejectTooDeep(message: unknown): void {
    const id = idOf(message);
    const hasMethod = typeof message === "object" && message !== null && "method" in message;
    // A too-deep notification gets no answer (the spec forbids answering notifications);
    // a too-deep response to one of our calls settles that call with the error.
    if (hasMethod && id === null) {
      this.#report(new RpcError(ErrorCodes.TooDeep), { phase: "receive" });
      return;
    }
    const pending = !hasMethod && id !== null ? this.#take(id) : undefined;
    if (pending) {
      pending.reject(
        new ValidationError(
          `Result of "${pending.method}" is nested deeper than ${this.#maxDepth} levels`,
          [{ code: "too_deep", path: [], message: "nested too deeply" }],
          "result",
        ),
      );
      return;
    }
    this.#sendResponse(
      errorResponse(id, ErrorCodes.TooDeep, "JSON nested too deeply", { limit: this.#maxDepth }),
    );
  }

  /** Handles one message (or one batch entry); returns the response to send, if any. */
  #receiveOne(
    message: unknown,
  ): ResponseMessage | undefined | Promise<ResponseMessage | undefined> {
    if (typeof message !== "object" || message === null || Array.isArray(message)) {
      return errorResponse(null, ErrorCodes.InvalidRequest, "Invalid Request");
    }
    const m = message as Record<string, unknown>;
    if (m.method === undefined) {
      if ("result" in m || "error" in m) {
        this.#receiveResponse(m);
        return undefined;
      }
      return errorResponse(idOf(m), ErrorCodes.InvalidRequest, "Invalid Request");
    }
    const hasId = "id" in m;
    const id = m.id;
    if (hasId && !isValidId(id)) {
      return errorResponse(null, ErrorCodes.InvalidRequest, "Invalid Request", {
        reason: "id must be a string or a safe integer",
      });
    }
    if (
      m.jsonrpc !== "2.0" ||
      typeof m.method !== "string" ||
      (m.params !== undefined && (typeof m.params !== "object" || m.params === null))
    ) {
      return errorResponse(
        hasId ? (id as RequestId) : null,
        ErrorCodes.InvalidRequest,
        "Invalid Request",
      );
    }
    const method = m.method;
    if (!hasId) {
      this.#receiveNotification(method, m.params);
      return undefined;
    }
    return this.#receiveRequest(method, m.params, id as RequestId, m.ezipc);
  }

  #receiveNotification(method: string, params: unknown): void {
    if (method.startsWith("rpc.")) {
      this.#speaksEzipc = true;
      this.#receiveControl(method, params);
      return;
    }
    if (this.#draining) {
      this.#report(new RpcError(ErrorCodes.ShuttingDown), { phase: "receive", method });
      return;
    }
    const entry = this.#local.get(method);
    if (entry === undefined) {
      // The spec forbids answering a notification, even for an unknown method.
      this.#report(new RpcError(ErrorCodes.MethodNotFound, `Method not found: ${method}`), {
        phase: "receive",
        method,
      });
      return;
    }
    if (this.#running >= this.#maxInFlight) {
      this.#report(new RpcError(ErrorCodes.Overloaded), { phase: "receive", method });
      return;
    }
    const response = this.#run(entry, params, undefined);
    if (response instanceof Promise) response.then(undefined, () => {});
  }

  /** Handles the reserved `rpc.*` notifications. */
  #receiveControl(method: string, params: unknown): void {
    const p = (typeof params === "object" && params !== null ? params : {}) as Record<
      string,
      unknown
    >;
    if (method === "rpc.goaway") {
      try {
        this.#onGoaway?.(typeof p.reason === "string" ? p.reason : undefined);
      } catch (error) {
        this.#report(error, { phase: "receive", method });
      }
      return;
    }
    const id = p.id;
    if (!isValidId(id)) return;
    switch (method) {
      case "rpc.cancel": {
        this.#cancelInbound(id);
        return;
      }
      case "rpc.stream.item": {
        this.#pending.get(id)?.consumer?.push(p.item);
        return;
      }
      case "rpc.stream.credit": {
        const inbound = this.#inbound?.get(id);
        const credit = p.credit;
        if (inbound === undefined || typeof credit !== "number" || !(credit > 0)) return;
        inbound.credit += Math.floor(credit);
        const wake = inbound.wake;
        inbound.wake = undefined;
        wake?.();
        return;
      }
      case "rpc.progress": {
        const progress = this.#pending.get(id)?.progress;
        if (progress === undefined) return;
        const deliver = (r: Awaited<ReturnType<Validator["check"]>>) => {
          if (!r.success) {
            this.#report(
              new ValidationError(
                "Progress value does not match the contract",
                r.issues,
                "progress",
              ),
              {
                phase: "receive",
                id,
              },
            );
            return;
          }
          try {
            progress.listener(r.data);
          } catch (error) {
            this.#report(error, { phase: "receive", id });
          }
        };
        if (progress.check === undefined || !this.#validate) {
          deliver({ success: true, data: p.value });
          return;
        }
        const checked = progress.check.check(p.value);
        if (checked instanceof Promise) checked.then(deliver);
        else deliver(checked);
        return;
      }
    }
  }

  #receiveRequest(
    method: string,
    params: unknown,
    id: RequestId,
    meta: unknown,
  ): ResponseMessage | Promise<ResponseMessage | undefined> | undefined {
    if (meta !== undefined) this.#speaksEzipc = true;
    if (method.startsWith("rpc.")) {
      this.#speaksEzipc = true;
      if (method === "rpc.ping") return { jsonrpc: "2.0", id, result: "pong" };
      if (method === "rpc.discover") {
        try {
          return { jsonrpc: "2.0", id, result: describeTable(this.#local) };
        } catch (error) {
          this.#report(error, { phase: "handler", method, id });
          return errorResponse(id, ErrorCodes.InternalError, "Internal error");
        }
      }
      return errorResponse(id, ErrorCodes.MethodNotFound, "Method not found");
    }
    if (this.#draining) {
      return errorResponse(id, ErrorCodes.ShuttingDown, "Server is shutting down");
    }
    const entry = this.#local.get(method);
    if (entry === undefined) {
      return errorResponse(id, ErrorCodes.MethodNotFound, "Method not found");
    }
    if (entry.kind === "notification") {
      return errorResponse(id, ErrorCodes.MethodNotFound, "Method not found", {
        reason: `"${method}" is a notification: send it without an id`,
      });
    }
    if (this.#inbound?.get(id) !== undefined) {
      return errorResponse(id, ErrorCodes.InvalidRequest, "Invalid Request", {
        reason: "a request with this id is still running",
      });
    }
    if (this.#running >= this.#maxInFlight) {
      return errorResponse(id, ErrorCodes.Overloaded, "Too many calls in flight", {
        limit: this.#maxInFlight,
      });
    }
    return this.#run(entry, params, id, meta);
  }

  /**
   * Runs a handler: validates params, calls it, validates the result. Returns the response
   * (for requests) or undefined (notifications); never throws.
   */
  #run(
    entry: LocalEntry,
    params: unknown,
    id: RequestId | undefined,
    meta?: unknown,
  ): ResponseMessage | undefined | Promise<ResponseMessage | undefined> {
    let input = params;
    if (entry.params === undefined) {
      if (!isEmptyParams(params)) {
        return this.#invalidParams(entry, id, [
          { code: "unrecognized_params", path: [], message: "This method takes no params" },
        ]);
      }
      input = undefined;
    } else if (this.#validate) {
      const checked = entry.params.check(params);
      if (checked instanceof Promise) {
        this.#running++;
        return checked.then((r) => {
          this.#release();
          if (!r.success) return this.#invalidParams(entry, id, r.issues, r.error);
          return this.#authorized(entry, r.data, id, meta);
        });
      }
      if (!checked.success) return this.#invalidParams(entry, id, checked.issues, checked.error);
      input = checked.data;
    }
    return this.#authorized(entry, input, id, meta);
  }

  /** Runs the authorization hook, if any, then the handler. */
  #authorized(
    entry: LocalEntry,
    params: unknown,
    id: RequestId | undefined,
    meta: unknown,
  ): ResponseMessage | undefined | Promise<ResponseMessage | undefined> {
    if (this.#authorize === undefined) return this.#invoke(entry, params, id, meta);
    let verdict: unknown;
    try {
      verdict = this.#authorize({ connection: this.#connection, method: entry.name, params });
    } catch (error) {
      verdict = error;
    }
    const decide = (v: unknown) => {
      if (v === true) return this.#invoke(entry, params, id, meta);
      const error =
        v instanceof RpcError
          ? v
          : new RpcError(ErrorCodes.Unauthorized, "Unauthorized", undefined, {
              cause: v instanceof Error ? v : undefined,
            });
      if (v instanceof Error && !(v instanceof RpcError)) {
        this.#report(v, { phase: "handler", method: entry.name, id: id ?? null });
      }
      if (id === undefined) {
        this.#report(error, { phase: "receive", method: entry.name });
        return undefined;
      }
      return { jsonrpc: "2.0" as const, id, error: error.toJSON() };
    };
    if (isThenable(verdict)) {
      this.#running++;
      return Promise.resolve(verdict).then(
        (v) => {
          this.#release();
          return decide(v);
        },
        (error: unknown) => {
          this.#release();
          return decide(error);
        },
      );
    }
    return decide(verdict);
  }

  #invoke(
    entry: LocalEntry,
    params: unknown,
    id: RequestId | undefined,
    meta: unknown,
  ): ResponseMessage | undefined | Promise<ResponseMessage | undefined> {
    const ctx = new Context(this, this.#connection, entry, id);
    if (meta !== undefined && typeof meta === "object" && meta !== null) {
      const m = meta as RequestMeta;
      const timeout = m.timeout;
      if (typeof timeout === "number" && timeout > 0 && Number.isFinite(timeout)) {
        ctx.deadline = Date.now() + timeout;
      }
      ctx.wantsProgress = m.progress === true && id !== undefined;
      if (typeof m.credit === "number" && m.credit > 0) ctx.credit = Math.floor(m.credit);
    }
    // A handler starting after the connection was lost (its async checks outlived it)
    // starts with its signal already aborted.
    if (this.#closed) ctx.reason = new ConnectionClosedError("Connection lost");
    if (entry.kind === "stream" && id !== undefined) return this.#produce(entry, params, id, ctx);
    this.#running++;
    let value: unknown;
    try {
      value = entry.handler(params, ctx);
    } catch (error) {
      return this.#finish(entry, id, ctx, undefined, error, true);
    }
    if (isThenable(value)) {
      // Only a handler that outlives this tick can be cancelled or cut off by a lost
      // connection, so only then is it registered (sync handlers cost no map entries).
      ctx.registered = true;
      this.#registry().add(ctx);
      return Promise.resolve(value).then(
        (v) => this.#finish(entry, id, ctx, v, undefined, false),
        (error: unknown) => this.#finish(entry, id, ctx, undefined, error, true),
      );
    }
    return this.#finish(entry, id, ctx, value, undefined, false);
  }

  #finish(
    entry: LocalEntry,
    id: RequestId | undefined,
    inbound: InboundCall,
    value: unknown,
    error: unknown,
    failed: boolean,
  ): ResponseMessage | undefined | Promise<ResponseMessage | undefined> {
    this.#release(inbound);
    if (failed) {
      if (id === undefined) {
        this.#report(error, { phase: "handler", method: entry.name });
        return undefined;
      }
      return this.#errorFor(entry, id, error);
    }
    if (id === undefined) return undefined;
    if (entry.result === undefined) return { jsonrpc: "2.0", id, result: value ?? null };
    if (!this.#validate) return { jsonrpc: "2.0", id, result: value };
    const checked = entry.result.check(value);
    // No closure on the synchronous path: it runs once per call.
    return checked instanceof Promise
      ? checked.then((r) => this.#resultResponse(entry, id, value, r))
      : this.#resultResponse(entry, id, value, checked);
  }

  #resultResponse(
    entry: LocalEntry,
    id: RequestId,
    value: unknown,
    r: Awaited<ReturnType<Validator["check"]>>,
  ): ResponseMessage {
    if (r.success) return { jsonrpc: "2.0", id, result: entry.result!.plain ? r.data : value };
    this.#report(
      new ValidationError(
        `Handler of "${entry.name}" returned a result that does not match the contract`,
        r.issues,
        "result",
      ),
      { phase: "result", method: entry.name, id },
    );
    return errorResponse(id, ErrorCodes.InternalError, "Internal error");
  }

  #errorFor(entry: LocalEntry, id: RequestId, error: unknown): ResponseMessage {
    if (error instanceof RpcError) {
      return { jsonrpc: "2.0", id, error: error.toJSON() };
    }
    this.#report(error, { phase: "handler", method: entry.name, id });
    if (this.#exposeErrors && error instanceof Error) {
      return errorResponse(id, ErrorCodes.InternalError, "Internal error", {
        name: error.name,
        message: error.message,
        stack: error.stack,
      });
    }
    return errorResponse(id, ErrorCodes.InternalError, "Internal error");
  }

  #invalidParams(
    entry: LocalEntry,
    id: RequestId | undefined,
    issues: ValidationIssue[],
    thrown?: unknown,
  ): ResponseMessage | undefined {
    // A schema that threw (a transform's bug, not the caller's input) is reported locally.
    if (thrown !== undefined) this.#report(thrown, { phase: "receive", method: entry.name });
    if (id === undefined) {
      this.#report(new ValidationError(`Invalid params for "${entry.name}"`, issues, "params"), {
        phase: "receive",
        method: entry.name,
      });
      return undefined;
    }
    return errorResponse(id, ErrorCodes.InvalidParams, "Invalid params", issues);
  }

  #cancelInbound(id: RequestId): void {
    const inbound = this.#inbound?.get(id);
    if (inbound === undefined) return;
    abortInbound(
      inbound,
      new RpcError(ErrorCodes.RequestCancelled, "The caller cancelled the call"),
    );
  }

  #receiveResponse(m: Record<string, unknown>): void {
    const id = m.id;
    if (!isValidId(id)) {
      // An error with id null is the other side telling us a frame of ours was bad, or
      // why it is about to close the connection (kept as the cause of the close).
      const error =
        "error" in m ? RpcError.fromJSON(m.error) : new Error("Response without a valid id");
      this.#remoteError = error;
      this.#report(error, { phase: "receive", id: null });
      return;
    }
    const pending = this.#take(id);
    if (pending === undefined) return; // late (timed out or cancelled): dropped by design
    if ("error" in m && m.error !== undefined) {
      const error = RpcError.fromJSON(m.error);
      // The handler gave up at the deadline we sent: for the caller that is its own timeout,
      // whichever of the two clocks fired first.
      pending.reject(
        error.code === ErrorCodes.DeadlineExceeded && pending.timeout > 0
          ? new TimeoutError(
              `Call of "${pending.method}" timed out after ${pending.timeout} ms`,
              pending.timeout,
              { cause: error },
            )
          : error,
      );
      return;
    }
    const result = m.result;
    if (pending.result === undefined || !this.#validate) {
      pending.resolve(pending.result === undefined && result === null ? undefined : result);
      return;
    }
    const checked = pending.result.check(result);
    if (checked instanceof Promise) checked.then((r) => settleResult(pending, r));
    else settleResult(pending, checked);
  }

  #checkOutgoing(
    schema: Validator | undefined,
    params: unknown,
    method: string,
  ): unknown | Promise<unknown> {
    if (schema === undefined) {
      if (params !== undefined) {
        throw new ValidationError(
          `"${method}" takes no params`,
          [{ code: "unrecognized_params", path: [], message: "This method takes no params" }],
          "params",
        );
      }
      return undefined;
    }
    if (!this.#validate) return params;
    const fail = (issues: ValidationIssue[]) =>
      new ValidationError(`Params of "${method}" do not match the contract`, issues, "params");
    const checked = schema.check(params);
    if (checked instanceof Promise) {
      return checked.then((r) => {
        if (!r.success) throw fail(r.issues);
        return schema.plain ? r.data : params;
      });
    }
    if (!checked.success) throw fail(checked.issues);
    return schema.plain ? checked.data : params;
  }

  #send(entry: RemoteEntry, params: unknown, options: CallOptions | undefined): Promise<unknown> {
    const method = entry.name;
    if (this.#closed) return Promise.reject(this.#closedError(method));
    const id = this.#nextId++;
    const timeout = options?.timeout === undefined ? this.#timeout : options.timeout;
    const finite = timeout > 0 && timeout !== Number.POSITIVE_INFINITY;
    const onProgress = options?.onProgress;
    try {
      const json = params === undefined ? undefined : JSON.stringify(params);
      // JSON.stringify returns undefined for a function or symbol: send no params at all.
      this.#sendJoined(
        requestHead(id, entry.quoted, json !== undefined),
        json ?? "",
        requestTail(finite ? timeout : undefined, onProgress !== undefined),
      );
    } catch (error) {
      return Promise.reject(this.#wrapSendError(error, method));
    }
    const call = new PendingCall(id, method, entry.result, timeout);
    this.#pending.set(id, call);
    if (onProgress !== undefined) {
      call.progress = { check: entry.progress, listener: onProgress as (v: unknown) => void };
    }
    if (finite) this.#deadlineQueue().add(timeout, id);
    const signal = options?.signal;
    if (signal !== undefined) {
      call.signal = signal;
      call.onAbort = () => {
        if (this.#take(id) !== undefined) {
          this.#sendCancel(id);
          call.reject(abortError(method, signal));
        }
      };
      signal.addEventListener("abort", call.onAbort, { once: true });
    }
    return call.promise!;
  }

  /** A call's deadline passed: it rejects with `TimeoutError` and the other side is told. */
  #expire(id: number): void {
    const call = this.#take(id);
    if (call === undefined) return;
    this.#sendCancel(id);
    call.reject(
      new TimeoutError(`Call of "${call.method}" timed out after ${call.timeout} ms`, call.timeout),
    );
  }

  /** Removes a pending call to settle it: it is then ignored by its deadline and its signal. */
  #take(id: unknown): PendingCall | undefined {
    const call = this.#pending.take(id);
    if (call === undefined) return undefined;
    if (call.onAbort !== undefined) call.signal!.removeEventListener("abort", call.onAbort);
    return call;
  }

  #registry(): RunningCalls {
    if (this.#inbound === undefined) this.#inbound = new RunningCalls();
    return this.#inbound;
  }

  #deadlineQueue(): Deadlines {
    if (this.#deadlines === undefined) {
      // Made on the first call with a deadline: a connection that only serves needs none.
      this.#deadlines = new Deadlines(
        (id) => this.#pending.get(id) !== undefined,
        (id) => this.#expire(id),
      );
    }
    return this.#deadlines;
  }

  #idleWaiters(): Set<() => void> {
    if (this.#idle === undefined) this.#idle = new Set();
    return this.#idle;
  }

  /**
   * The one way a unit of work (a handler, or an async check before it) ends: counted
   * out, unregistered, its deadline timer cleared, and `whenIdle` woken at zero.
   */
  #release(inbound?: InboundCall): void {
    this.#running--;
    if (inbound !== undefined) {
      if (inbound.registered) this.#inbound?.delete(inbound);
      if (inbound.timer !== undefined) clearTimeout(inbound.timer);
    }
    if (this.#running === 0) this.#wakeIdle();
  }

  #wakeIdle(): void {
    const idle = this.#idle;
    if (idle === undefined || idle.size === 0) return;
    this.#idle = undefined;
    for (const resolve of idle) resolve();
  }

  #sendCancel(id: RequestId): void {
    this.#sendNotification("rpc.cancel", { id });
  }

  /** Sends a protocol notification; failures are reported, never thrown. */
  #sendNotification(method: string, params: unknown): void {
    if (this.#closed) return;
    try {
      this.#transport.send(JSON.stringify({ jsonrpc: "2.0", method, params }));
    } catch (error) {
      this.#report(error, { phase: "send" });
    }
  }

  /** @internal `ctx.progress` of a handler. */
  sendProgress(
    entry: LocalEntry,
    id: RequestId | undefined,
    inbound: InboundCall,
    value: unknown,
  ): void {
    if (!inbound.wantsProgress || id === undefined || this.#closed || inbound.reason !== undefined)
      return;
    const send = (v: unknown) => this.#sendNotification("rpc.progress", { id, value: v });
    if (entry.progress === undefined || !this.#validate) {
      send(value);
      return;
    }
    const progress = entry.progress;
    const settle = (r: Awaited<ReturnType<Validator["check"]>>) => {
      if (r.success) {
        send(progress.plain ? r.data : value);
        return;
      }
      this.#report(
        new ValidationError(
          `Handler of "${entry.name}" reported progress that does not match the contract`,
          r.issues,
          "progress",
        ),
        { phase: "result", method: entry.name, id },
      );
    };
    const checked = progress.check(value);
    if (checked instanceof Promise) checked.then(settle);
    else settle(checked);
  }

  /**
   * Runs a stream handler: pulls items from its iterable only while the consumer has
   * granted credit, so a slow consumer makes the generator wait instead of buffering.
   * Resolves with the final response (`null` result, or the error).
   */
  async #produce(
    entry: LocalEntry,
    params: unknown,
    id: RequestId,
    inbound: InboundCall,
  ): Promise<ResponseMessage | undefined> {
    const ctx = inbound;
    inbound.registered = true;
    this.#registry().add(inbound);
    this.#running++;
    let iterator: AsyncIterator<unknown> | undefined;
    let response: ResponseMessage;
    try {
      const iterable = (await entry.handler(params, ctx)) as AsyncIterable<unknown>;
      if (
        typeof iterable !== "object" ||
        iterable === null ||
        !(Symbol.asyncIterator in iterable)
      ) {
        throw new TypeError(`Stream handler of "${entry.name}" did not return an AsyncIterable`);
      }
      iterator = iterable[Symbol.asyncIterator]();
      for (;;) {
        while (inbound.credit === 0 && inbound.reason === undefined) {
          await new Promise<void>((resolve) => {
            inbound.wake = resolve;
          });
        }
        if (inbound.reason !== undefined) break;
        const step = await iterator.next();
        if (step.done) {
          iterator = undefined; // finished by itself: no return() needed
          break;
        }
        if (inbound.reason !== undefined) break;
        let item = step.value;
        if (entry.item !== undefined && this.#validate) {
          const r = await entry.item.check(item);
          if (!r.success) {
            this.#report(
              new ValidationError(
                `Stream handler of "${entry.name}" yielded an item that does not match the contract`,
                r.issues,
                "item",
              ),
              { phase: "result", method: entry.name, id },
            );
            throw new RpcError(ErrorCodes.InternalError, "Internal error");
          }
          if (entry.item.plain) item = r.data;
        }
        this.#transport.send(
          JSON.stringify({ jsonrpc: "2.0", method: "rpc.stream.item", params: { id, item } }),
        );
        inbound.credit--;
      }
      response =
        inbound.reason !== undefined
          ? errorResponse(id, ErrorCodes.RequestCancelled, "Request cancelled")
          : { jsonrpc: "2.0", id, result: null };
    } catch (error) {
      response = this.#errorFor(entry, id, error);
    } finally {
      if (iterator?.return !== undefined) {
        // Leaving early (cancelled, lost connection, a failure of ours) runs the
        // generator's `finally`.
        try {
          await iterator.return();
        } catch (error) {
          this.#report(error, { phase: "handler", method: entry.name, id });
        }
      }
    }
    this.#release(inbound);
    return response;
  }

  #sendResponse(response: ResponseMessage | ResponseMessage[]): void {
    if (this.#closed) return;
    // The common single success is encoded around its result only (`result`), others whole.
    let result: string | undefined;
    let text = "";
    try {
      if (!Array.isArray(response) && "result" in response) {
        result = JSON.stringify(response.result) ?? "null";
      } else {
        text = JSON.stringify(response);
      }
    } catch (error) {
      // A result JSON cannot represent (a BigInt, a cycle): a server bug, reported locally.
      this.#report(error, { phase: "send" });
      const fallback = Array.isArray(response) ? response : [response];
      text = JSON.stringify(
        fallback.map((r) => {
          if ("error" in r) return r;
          try {
            JSON.stringify(r);
            return r;
          } catch {
            return errorResponse(r.id, ErrorCodes.InternalError, "Internal error");
          }
        }),
      );
      if (!Array.isArray(response)) text = text.slice(1, -1);
    }
    try {
      if (result !== undefined && !Array.isArray(response)) {
        this.#sendJoined(
          `{"jsonrpc":"2.0","id":${JSON.stringify(response.id)},"result":`,
          result,
          "}",
        );
      } else {
        this.#transport.send(text);
      }
    } catch (error) {
      if (error instanceof FrameTooLargeError && !Array.isArray(response)) {
        // The result does not fit the caller's frame limit: tell the caller, not just us.
        this.#report(error, { phase: "send", id: response.id });
        this.#transport.send(
          JSON.stringify(
            errorResponse(response.id, ErrorCodes.FrameTooLarge, "Response too large", {
              size: error.size,
              limit: error.limit,
            }),
          ),
        );
        return;
      }
      this.#report(error, { phase: "send" });
    }
  }

  /**
   * Sends `head + body + tail` as one frame. A large body (a big params or result JSON) goes
   * to the transport in parts: joining it first would copy it once more.
   */
  #sendJoined(head: string, body: string, tail: string): void {
    if (body.length >= LARGE_BODY && this.#transport.sendParts !== undefined) {
      this.#transport.sendParts([head, body, tail]);
    } else {
      this.#transport.send(head + body + tail);
    }
  }

  #wrapSendError(error: unknown, method: string): Error {
    if (error instanceof FrameTooLargeError || error instanceof ConnectionClosedError) return error;
    if (this.#closed) return this.#closedError(method);
    // JSON.stringify failed: the params hold something JSON cannot carry.
    return new ValidationError(
      `Params of "${method}" cannot be encoded as JSON: ${(error as Error).message}`,
      [{ code: "not_json", path: [], message: (error as Error).message }],
      "params",
      { cause: error },
    );
  }

  #closedError(method: string): ConnectionClosedError {
    const why = this.#closeError ? `: ${this.#closeError.message}` : "";
    return new ConnectionClosedError(`Connection closed before "${method}" settled${why}`, {
      cause: this.#closeError,
    });
  }

  #handleClose(error?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeError = error ?? this.#remoteError;
    this.#deadlines?.clear();
    const pending = this.#pending.values();
    this.#pending.clear();
    for (const call of pending) {
      if (call.onAbort !== undefined) call.signal!.removeEventListener("abort", call.onAbort);
      call.reject(this.#closedError(call.method));
    }
    const reason = new ConnectionClosedError("Connection lost", { cause: this.#closeError });
    if (this.#inbound !== undefined) {
      for (const inbound of this.#inbound.values()) abortInbound(inbound, reason);
    }
    this.#onClose?.(this.#closeError, this.#connection);
  }

  #report(error: unknown, report: Omit<ErrorReport, "connection">): void {
    if (this.#onError === undefined) return;
    try {
      this.#onError(error, { ...report, connection: this.#connection });
    } catch {
      // A throwing onError hook must not break the connection.
    }
  }
}

/** Settles a call with its validated result, or a `ValidationError`. */
function settleResult(pending: PendingCall, r: Awaited<ReturnType<Validator["check"]>>): void {
  if (r.success) {
    pending.resolve(r.data);
    return;
  }
  pending.reject(
    new ValidationError(
      `Result of "${pending.method}" does not match the contract`,
      r.issues,
      "result",
    ),
  );
}

function abortError(method: string, signal: AbortSignal): AbortError {
  return new AbortError(`Call of "${method}" was aborted`, { cause: signal.reason });
}

const PING: RemoteEntry = {
  name: "rpc.ping",
  quoted: '"rpc.ping"',
  kind: "method",
  params: undefined,
  result: undefined,
  progress: undefined,
  item: undefined,
  def: { kind: "method" } as RemoteEntry["def"],
};

const DISCOVER: RemoteEntry = { ...PING, name: "rpc.discover", quoted: '"rpc.discover"' };

const CHALLENGE = [..."#CHALLENGE#"].map((c) => c.charCodeAt(0));

function startsWith(bytes: Uint8Array, prefix: number[]): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

function idOf(message: unknown): RequestId | null {
  if (typeof message !== "object" || message === null) return null;
  const id = (message as { id?: unknown }).id;
  return isValidId(id) ? id : null;
}

function isEmptyParams(params: unknown): boolean {
  if (params === undefined) return true;
  if (Array.isArray(params)) return params.length === 0;
  return typeof params === "object" && params !== null && Object.keys(params).length === 0;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { then?: unknown }).then === "function"
  );
}
