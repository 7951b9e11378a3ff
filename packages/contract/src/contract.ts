import type { $ZodType } from "zod/v4/core";

/**
 * A schema usable as params: its JSON form must be an object (by-name params) or an
 * array (by-position params), as JSON-RPC 2.0 requires. `undefined` is allowed in the
 * input so that optional params (`z.object({…}).optional()`) can be left out.
 */
export type ParamsSchema = $ZodType<unknown, object | undefined>;

/** The type-level mark of values made by `method`, `notification` and `stream`. */
export declare const definitionBrand: unique symbol;

/** What every contract entry has: made by `method`, `notification` or `stream`. */
export interface DefinitionBase {
  /** Which of the three it is. */
  readonly kind: "method" | "notification" | "stream";
  /** Type-level only: a plain `{ kind: "method" }` object is not a definition. */
  readonly [definitionBrand]: true;
}

/** A request–response method in a contract: the caller awaits its result. */
export interface MethodDef<
  TParams extends ParamsSchema | undefined = ParamsSchema | undefined,
  TResult extends $ZodType | undefined = $ZodType | undefined,
  TProgress extends $ZodType | undefined = $ZodType | undefined,
> extends DefinitionBase {
  /** Discriminates methods from notifications. */
  readonly kind: "method";
  /** The params schema, or `undefined` for a method without params. */
  readonly params: TParams;
  /** The result schema, or `undefined` for a method whose result is `null` on the wire. */
  readonly result: TResult;
  /** Whether retrying the method after a lost connection is safe (see docs/reliability.md). */
  readonly idempotent: boolean;
  /** The schema of progress values the handler may report, or `undefined`. */
  readonly progress: TProgress;
}

/** A one-way message in a contract: no response, no result. */
export interface NotificationDef<
  TParams extends ParamsSchema | undefined = ParamsSchema | undefined,
> extends DefinitionBase {
  /** Discriminates notifications from methods. */
  readonly kind: "notification";
  /** The params schema, or `undefined` for a notification without params. */
  readonly params: TParams;
}

/**
 * A stream in a contract: the caller iterates items the handler yields, with flow
 * control (the producer waits when the consumer's window is full).
 */
export interface StreamDef<
  TParams extends ParamsSchema | undefined = ParamsSchema | undefined,
  TItem extends $ZodType = $ZodType,
> extends DefinitionBase {
  /** Discriminates streams from methods and notifications. */
  readonly kind: "stream";
  /** The params schema, or `undefined` for a stream without params. */
  readonly params: TParams;
  /** The schema of each item. */
  readonly item: TItem;
}

/** Any entry of a contract side. */
export type Definition = MethodDef | NotificationDef | StreamDef;

/**
 * One half of a contract: the methods, notifications and streams one side implements.
 *
 * Its entries are constrained by {@link DefinitionBase} only: a constraint that named `MethodDef`'s type
 * parameters would become the contextual type of each `method(…)` call inside
 * `defineContract` and make TypeScript infer an absent `params` as the constraint
 * (`$ZodType | undefined`) instead of `undefined`.
 */
export type ContractSide = { readonly [name: string]: DefinitionBase };

/** A contract: what the server implements and what the client implements. */
export interface Contract<
  TServer extends ContractSide = ContractSide,
  TClient extends ContractSide = ContractSide,
> {
  /** Implemented by the server, called by clients. */
  readonly server: TServer;
  /** Implemented by clients, called by the server (server → client). */
  readonly client: TClient;
}

/** What `method()` takes. */
export interface MethodOptions<
  TParams extends ParamsSchema | undefined,
  TResult extends $ZodType | undefined,
  TProgress extends $ZodType | undefined = undefined,
> {
  /** A zod object (by-name params), tuple or array (by-position), or absent (no params). */
  params?: TParams;
  /** Any zod schema for the result; absent means the method returns nothing (`null` on the wire). */
  result?: TResult;
  /**
   * Marks the method safe to call twice (the client may retry it after a lost connection).
   * @default false
   */
  idempotent?: boolean;
  /**
   * The schema of progress values: the handler reports with `ctx.progress(value)`, the
   * caller receives validated values through `call(…, { onProgress })`.
   */
  progress?: TProgress;
}

/**
 * Declares a request–response method.
 *
 * @example
 * write: method({
 *   params: z.object({ filename: z.string(), content: z.string() }),
 *   result: z.object({ written: z.number().int() }),
 * })
 */
export function method<
  TParams extends ParamsSchema | undefined = undefined,
  TResult extends $ZodType | undefined = undefined,
  TProgress extends $ZodType | undefined = undefined,
>(options: MethodOptions<TParams, TResult, TProgress>): MethodDef<TParams, TResult, TProgress> {
  return Object.freeze({
    kind: "method",
    params: options.params as TParams,
    result: options.result as TResult,
    idempotent: options.idempotent ?? false,
    progress: options.progress as TProgress,
  }) as MethodDef<TParams, TResult, TProgress>;
}

/**
 * Declares a stream: the handler is an async generator (or returns an `AsyncIterable`);
 * the caller iterates validated items with `for await (const item of client.stream(…))`.
 *
 * @example
 * tail: stream({ params: z.object({ file: z.string() }), item: z.object({ line: z.string() }) })
 */
export function stream<
  TParams extends ParamsSchema | undefined = undefined,
  TItem extends $ZodType = $ZodType,
>(options: { params?: TParams; item: TItem }): StreamDef<TParams, TItem> {
  return Object.freeze({
    kind: "stream",
    params: options.params as TParams,
    item: options.item,
  }) as StreamDef<TParams, TItem>;
}

/**
 * Declares a notification: a one-way message with no response.
 *
 * @example
 * log: notification({ params: z.object({ line: z.string() }) })
 */
export function notification<TParams extends ParamsSchema | undefined = undefined>(
  options: { params?: TParams } = {},
): NotificationDef<TParams> {
  return Object.freeze({
    kind: "notification",
    params: options.params as TParams,
  }) as NotificationDef<TParams>;
}

const RESERVED_PREFIX = "rpc.";

/**
 * Defines a contract, imported by both sides. `server` lists what the server implements;
 * `client` (optional) what clients implement for server → client calls.
 *
 * Names beginning with `rpc.` are reserved by JSON-RPC 2.0 and rejected.
 *
 * @example
 * export const files = defineContract({
 *   server: { write: method({ params: z.object({ filename: z.string() }), result: z.number() }) },
 * });
 */
export function defineContract<
  TServer extends ContractSide,
  TClient extends ContractSide = Record<never, never>,
>(sides: { server: TServer; client?: TClient }): Contract<TServer, TClient> {
  const client = (sides.client ?? {}) as TClient;
  for (const [sideName, side] of [
    ["server", sides.server],
    ["client", client],
  ] as const) {
    for (const name of Object.keys(side)) {
      if (name.startsWith(RESERVED_PREFIX)) {
        throw new TypeError(
          `Contract ${sideName}.${name}: names beginning with "rpc." are reserved by JSON-RPC 2.0`,
        );
      }
      const def = side[name] as Definition | undefined;
      if (!def || (def.kind !== "method" && def.kind !== "notification" && def.kind !== "stream")) {
        throw new TypeError(
          `Contract ${sideName}.${name}: expected method(…), notification(…) or stream(…), got ${typeof def}`,
        );
      }
    }
  }
  return Object.freeze({ server: sides.server, client });
}
