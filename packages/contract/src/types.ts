import type { $ZodType, input, output } from "zod/v4/core";
import type { ContractSide, MethodDef, NotificationDef } from "./contract.js";

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

/** Per-call options of `call`. */
export interface CallOptions {
  /**
   * Milliseconds to wait for the result; then the call rejects with `TimeoutError` and the
   * remote handler is told to cancel. `Infinity` or `0` waits forever.
   * @default the connection's `timeout` option (30 000 ms)
   */
  timeout?: number;
  /** Aborting it rejects the call with `AbortError` and tells the remote handler to cancel. */
  signal?: AbortSignal;
}

/** The argument list of `call(name, …)`: params are optional when the schema accepts `undefined`. */
export type CallArgs<TSide extends ContractSide, K extends keyof TSide> =
  undefined extends InferParams<TSide, K>
    ? [params?: InferParams<TSide, K>, options?: CallOptions]
    : [params: InferParams<TSide, K>, options?: CallOptions];

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

/** The second argument of every handler. */
export interface HandlerContext<TRemote extends ContractSide = ContractSide> {
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
        ctx: HandlerContext<TRemote>,
      ) => MaybePromise<InferHandlerResult<TLocal, K>>
    : (params: InferHandlerParams<TLocal, K>, ctx: HandlerContext<TRemote>) => MaybePromise<void>;
};
