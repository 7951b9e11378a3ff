import type { RpcErrorJSON } from "@ezipc/contract";

/** A JSON-RPC 2.0 request or notification id: ezipc accepts strings and safe integers only. */
export type RequestId = string | number;

/** A JSON-RPC 2.0 request (with `id`) or notification (without). */
export interface RequestMessage {
  jsonrpc: "2.0";
  method: string;
  params?: unknown;
  id?: RequestId;
}

/** A JSON-RPC 2.0 response: `result` or `error`, and the id it answers (`null` when unknown). */
export type ResponseMessage =
  | { jsonrpc: "2.0"; id: RequestId | null; result: unknown }
  | { jsonrpc: "2.0"; id: RequestId | null; error: RpcErrorJSON };

/** Whether `id` is a valid id by ezipc's rules: a string or a safe integer. */
export function isValidId(id: unknown): id is RequestId {
  return typeof id === "string" || (typeof id === "number" && Number.isSafeInteger(id));
}

/**
 * Whether `value` nests arrays/objects deeper than `max` levels. Iterative, so the check
 * itself cannot overflow the stack whatever `max` and the input are.
 */
export function deeperThan(value: unknown, max: number): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (max <= 0) return true;
  // Recursion bounded by a small limit cannot overflow the stack and allocates nothing:
  // the common case. Larger limits take the iterative walk.
  if (max <= 256) return deeperRecursive(value, max);
  const values: object[] = [value];
  const depths: number[] = [1];
  while (values.length > 0) {
    const current = values.pop()!;
    const depth = depths.pop()!;
    const children = Array.isArray(current) ? current : Object.values(current);
    for (let i = 0; i < children.length; i++) {
      const child: unknown = children[i];
      if (typeof child === "object" && child !== null) {
        if (depth >= max) return true;
        values.push(child);
        depths.push(depth + 1);
      }
    }
  }
  return false;
}

function deeperRecursive(value: object, max: number): boolean {
  if (max === 0) return true;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const child: unknown = value[i];
      if (typeof child === "object" && child !== null && deeperRecursive(child, max - 1))
        return true;
    }
    return false;
  }
  for (const key in value) {
    const child: unknown = (value as Record<string, unknown>)[key];
    if (typeof child === "object" && child !== null && deeperRecursive(child, max - 1)) return true;
  }
  return false;
}

/** Builds an error response. */
export function errorResponse(
  id: RequestId | null,
  code: number,
  message: string,
  data?: unknown,
): ResponseMessage {
  const error: RpcErrorJSON = { code, message };
  if (data !== undefined) error.data = data;
  return { jsonrpc: "2.0", id, error };
}

/** The extension member ezipc adds to requests; a plain JSON-RPC peer ignores it. */
export interface RequestMeta {
  /** Milliseconds the caller will wait (its deadline, relative to sending). */
  timeout?: number;
  /** The caller listens for `rpc.progress`. */
  progress?: true;
  /** Initial credit of a stream: items the producer may send before waiting. */
  credit?: number;
}

/**
 * The JSON text of a request, with ezipc's extension member only when it has content.
 * Built by hand around `JSON.stringify(params)`: our ids are numbers and the method name is
 * encoded once per contract, so only the params need the encoder.
 */
export function requestText(
  id: number,
  quotedMethod: string,
  params: unknown,
  timeout: number | undefined,
  progress?: boolean,
  credit?: number,
): string {
  const json = params === undefined ? undefined : JSON.stringify(params);
  // JSON.stringify returns undefined for a function or symbol: send no params at all.
  return (
    requestHead(id, quotedMethod, json !== undefined) +
    (json ?? "") +
    requestTail(timeout, progress, credit)
  );
}

/** A request's text up to its params: `{"jsonrpc":"2.0","id":…,"method":…[,"params":]`. */
export function requestHead(id: number, quotedMethod: string, hasParams: boolean): string {
  // JSON.stringify, not `${id}`: V8 keeps number-to-string results in a cache that lives in
  // the old generation, so each id's string outlived young GCs and was promoted (~30 bytes
  // per call, and scavenges that cost twice as much).
  const text = JSON.stringify(id);
  return hasParams
    ? `{"jsonrpc":"2.0","id":${text},"method":${quotedMethod},"params":`
    : `{"jsonrpc":"2.0","id":${text},"method":${quotedMethod}`;
}

/** A request's text after its params: the `ezipc` member when it has content, and `}`. */
export function requestTail(
  timeout: number | undefined,
  progress?: boolean,
  credit?: number,
): string {
  if (!progress && credit === undefined) {
    if (timeout === undefined) return "}";
    // Nearly every call carries only the default timeout: its encoding is cached.
    if (timeout !== cachedTimeout) {
      cachedTimeout = timeout;
      cachedTimeoutText = `,"ezipc":{"timeout":${JSON.stringify(timeout)}}}`;
    }
    return cachedTimeoutText;
  }
  const meta: RequestMeta = {};
  if (timeout !== undefined) meta.timeout = timeout;
  if (progress) meta.progress = true;
  if (credit !== undefined) meta.credit = credit;
  return `,"ezipc":${JSON.stringify(meta)}}`;
}

let cachedTimeout: number | undefined;
let cachedTimeoutText = "";
