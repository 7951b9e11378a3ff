import type { $ZodType, input, output } from "zod/v4/core";
import type { ContractSide, MethodDef, NotificationDef, StreamDef } from "./contract.js";

/** What a sender writes for a schema: its input type (`undefined` when there is no schema). */
export type InferInput<T> = T extends $ZodType ? input<T> : undefined;
/** What a receiver gets for a schema: its parsed output type (`undefined` when there is none). */
export type InferOutput<T> = T extends $ZodType ? output<T> : undefined;

/** The names of a side's request–response methods. */
export type MethodNames<TSide extends ContractSide> = {
  [K in keyof TSide]: TSide[K] extends MethodDef ? K : never;
}[keyof TSide] &
  string;

/** The names of a side's notifications. */
export type NotificationNames<TSide extends ContractSide> = {
  [K in keyof TSide]: TSide[K] extends NotificationDef ? K : never;
}[keyof TSide] &
  string;

/** The names of a side's streams. */
export type StreamNames<TSide extends ContractSide> = {
  [K in keyof TSide]: TSide[K] extends StreamDef ? K : never;
}[keyof TSide] &
  string;

/** The items a consumer of stream `name` receives (the item schema's output). */
export type InferItem<TSide extends ContractSide, K extends keyof TSide> =
  TSide[K] extends StreamDef<infer _UParams, infer UItem> ? output<UItem> : never;

/** What a stream handler of `name` yields (the item schema's input). */
export type InferHandlerItem<TSide extends ContractSide, K extends keyof TSide> =
  TSide[K] extends StreamDef<infer _UParams, infer UItem> ? input<UItem> : never;

/** The progress values a caller of `name` receives (`never` when it declares none). */
export type InferProgress<TSide extends ContractSide, K extends keyof TSide> = TSide[K] extends {
  readonly progress: infer U;
}
  ? U extends $ZodType
    ? output<U>
    : never
  : never;

/** The progress values a handler of `name` reports (`never` when it declares none). */
export type InferHandlerProgress<
  TSide extends ContractSide,
  K extends keyof TSide,
> = TSide[K] extends {
  readonly progress: infer U;
}
  ? U extends $ZodType
    ? input<U>
    : never
  : never;

/** The params a caller passes to `name` (the schema's input type). */
export type InferParams<TSide extends ContractSide, K extends keyof TSide> = TSide[K] extends {
  readonly params: infer U;
}
  ? InferInput<U>
  : undefined;

/** The params a handler of `name` receives (the schema's parsed output type). */
export type InferHandlerParams<
  TSide extends ContractSide,
  K extends keyof TSide,
> = TSide[K] extends {
  readonly params: infer U;
}
  ? InferOutput<U>
  : undefined;

/** The result a caller of `name` receives (the result schema's output; `void` without one). */
export type InferResult<TSide extends ContractSide, K extends keyof TSide> =
  TSide[K] extends MethodDef<infer _UParams, infer UResult>
    ? UResult extends $ZodType
      ? output<UResult>
      : void
    : never;

/** What a handler of `name` returns (the result schema's input type; `void` without one). */
export type InferHandlerResult<TSide extends ContractSide, K extends keyof TSide> =
  TSide[K] extends MethodDef<infer _UParams, infer UResult>
    ? UResult extends $ZodType
      ? input<UResult>
      : void | null | undefined
    : void;

/** Per-call options of `call`; `TProgress` is the method's progress type. */
export interface CallOptions<TProgress = unknown> {
  /**
   * Milliseconds to wait for the result; then the call rejects with `TimeoutError` and the
   * remote handler is told to cancel. `Infinity` or `0` waits forever.
   * @default the connection's `timeout` option (30 000 ms)
   */
  timeout?: number;
  /** Aborting it rejects the call with `AbortError` and tells the remote handler to cancel. */
  signal?: AbortSignal;
  /**
   * Receives each validated progress value the handler reports (methods that declare
   * `progress` in the contract). Progress is only sent when this is set.
   */
  onProgress?: (value: TProgress) => void;
}

/** Options of `stream`. */
export interface StreamOptions {
  /** Aborting it ends the iteration with `AbortError` and stops the remote generator. */
  signal?: AbortSignal;
  /**
   * Items the producer may send ahead of the consumer (flow-control window); it waits
   * when the window is full.
   * @default 64
   */
  window?: number;
  /** Milliseconds the whole stream may take; `Infinity` or `0` (the default) waits forever. */
  timeout?: number;
}

/** The argument list of `call(name, …)`: params are optional when the schema accepts `undefined`. */
export type CallArgs<TSide extends ContractSide, K extends keyof TSide> =
  undefined extends InferParams<TSide, K>
    ? [params?: InferParams<TSide, K>, options?: CallOptions<InferProgress<TSide, K>>]
    : [params: InferParams<TSide, K>, options?: CallOptions<InferProgress<TSide, K>>];

/** The argument list of `stream(name, …)`. */
export type StreamArgs<TSide extends ContractSide, K extends keyof TSide> =
  undefined extends InferParams<TSide, K>
    ? [params?: InferParams<TSide, K>, options?: StreamOptions]
    : [params: InferParams<TSide, K>, options?: StreamOptions];

/** The argument list of `notify(name, …)`. */
export type NotifyArgs<TSide extends ContractSide, K extends keyof TSide> =
  undefined extends InferParams<TSide, K>
    ? [params?: InferParams<TSide, K>]
    : [params: InferParams<TSide, K>];

/** The typed calls one side can make to the other: the other side's half of the contract. */
export interface RemoteApi<TRemote extends ContractSide> {
  /** Calls a remote method and resolves with its validated result. */
  call<K extends MethodNames<TRemote>>(
    method: K,
    ...args: CallArgs<TRemote, K>
  ): Promise<InferResult<TRemote, K>>;
  /** Sends a notification; resolves once it was written to the connection. */
  notify<K extends NotificationNames<TRemote>>(
    method: K,
    ...args: NotifyArgs<TRemote, K>
  ): Promise<void>;
  /**
   * Opens a remote stream: iterate it with `for await`. Leaving the loop early stops the
   * remote generator (its `finally` runs).
   */
  stream<K extends StreamNames<TRemote>>(
    method: K,
    ...args: StreamArgs<TRemote, K>
  ): AsyncIterable<InferItem<TRemote, K>>;
}

/** What a handler knows about the connection a call arrived on. */
export interface ConnectionInfo {
  /** Unique id of the connection within this process. */
  readonly id: string;
  /** `unix`, `tcp`, `tls`, `pipe`, `stdio` or `memory`. */
  readonly transport: string;
  /** The remote address (`host:port` for TCP/TLS, the socket path for Unix sockets). */
  readonly remoteAddress: string;
  /** Whether the peer proved knowledge of the `authKey` (always `false` without one). */
  readonly authenticated: boolean;
  /** The peer's verified TLS certificate, when it presented one (mutual TLS, or the server's). */
  readonly peerCertificate?: PeerCertificate | undefined;
}

/** The identifying part of a verified TLS certificate. */
export interface PeerCertificate {
  /** The subject's fields (`CN`, `O`, …). */
  readonly subject: Readonly<Record<string, string>>;
  /** The issuer's fields. */
  readonly issuer: Readonly<Record<string, string>>;
  /** SHA-256 fingerprint, colon-separated hex. */
  readonly fingerprint256: string;
}

/** The second argument of every handler; `TProgress` is what `progress` takes. */
export interface HandlerContext<TRemote extends ContractSide = ContractSide, TProgress = never> {
  /** The connection the call arrived on. */
  readonly connection: ConnectionInfo;
  /** Aborts when the caller cancels, its deadline passes, or the connection is lost. */
  readonly signal: AbortSignal;
  /** Typed calls back to the caller's side (the other half of the contract). */
  readonly peer: RemoteApi<TRemote>;
  /** The method name being served. */
  readonly method: string;
  /** The request id (`undefined` for a notification). */
  readonly id: string | number | undefined;
  /**
   * When the caller stops waiting, as milliseconds since the epoch (`Date.now()` clock),
   * from the deadline that travelled with the request; `undefined` when it has none.
   * `signal` aborts at that moment.
   */
  readonly deadline: number | undefined;
  /**
   * Reports progress to the caller (methods that declare `progress`); validated against
   * the schema, and sent only if the caller listens. Never throws.
   */
  progress(value: TProgress): void;
}

/** Either a value or a promise of it: handlers may be sync or async. */
export type MaybePromise<T> = T | Promise<T>;

/**
 * The implementation of one side of a contract: a handler for every method and
 * notification, typed from the schemas (params are parsed outputs; results are inputs).
 */
export type Handlers<TLocal extends ContractSide, TRemote extends ContractSide = ContractSide> = {
  [K in keyof TLocal]: TLocal[K] extends MethodDef
    ? (
        params: InferHandlerParams<TLocal, K>,
        ctx: HandlerContext<TRemote, InferHandlerProgress<TLocal, K>>,
      ) => MaybePromise<InferHandlerResult<TLocal, K>>
    : TLocal[K] extends StreamDef
      ? (
          params: InferHandlerParams<TLocal, K>,
          ctx: HandlerContext<TRemote>,
        ) => MaybePromise<AsyncIterable<InferHandlerItem<TLocal, K>>>
      : (params: InferHandlerParams<TLocal, K>, ctx: HandlerContext<TRemote>) => MaybePromise<void>;
};
