import { ErrorMessages } from "./codes.js";

/** The JSON form of a JSON-RPC 2.0 error object. */
export interface RpcErrorJSON {
  code: number;
  message: string;
  data?: unknown;
}

/**
 * An error that crosses the wire: what the remote side sent (code, message, data).
 * Throw one from a handler to send exactly that to the caller.
 *
 * @example
 * throw new RpcError(ErrorCodes.Unauthorized, "not your file", { filename });
 */
export class RpcError extends Error {
  override readonly name = "RpcError";
  /** The JSON-RPC error code (see {@link ErrorCodes}). */
  readonly code: number;
  /** Extra information the remote side attached, if any. */
  readonly data: unknown;

  constructor(code: number, message?: string, data?: unknown, options?: ErrorOptions) {
    super(message ?? ErrorMessages[code] ?? `Error ${code}`, options);
    this.code = code;
    this.data = data;
  }

  /** The JSON-RPC 2.0 error object for this error. */
  toJSON(): RpcErrorJSON {
    const json: RpcErrorJSON = { code: this.code, message: this.message };
    if (this.data !== undefined) json.data = this.data;
    return json;
  }

  /** Rebuilds an `RpcError` from a received error object, tolerating malformed ones. */
  static fromJSON(json: unknown): RpcError {
    if (typeof json === "object" && json !== null) {
      const { code, message, data } = json as Record<string, unknown>;
      if (typeof code === "number" && Number.isInteger(code)) {
        return new RpcError(code, typeof message === "string" ? message : undefined, data);
      }
    }
    return new RpcError(-32603, "Malformed error object received", json);
  }
}

/** One problem zod found, in its JSON form (as in `error.data` of -32602). */
export interface ValidationIssue {
  code: string;
  path: PropertyKey[];
  message: string;
  [key: string]: unknown;
}

/**
 * Local params, or a received result, did not match the contract. Nothing was sent
 * (for params) or the result was discarded. `issues` are zod's.
 */
export class ValidationError extends Error {
  override readonly name = "ValidationError";
  /** zod's issues, with paths into the value. */
  readonly issues: readonly ValidationIssue[];
  /** Which value failed: the params about to be sent, or a result that arrived. */
  readonly target: "params" | "result" | "item" | "progress";

  constructor(
    message: string,
    issues: readonly ValidationIssue[],
    target: ValidationError["target"],
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.issues = issues;
    this.target = target;
  }
}

/** The call did not settle within its timeout. The remote side was told to cancel. */
export class TimeoutError extends Error {
  override readonly name = "TimeoutError";
  /** The timeout that expired, in milliseconds. */
  readonly timeout: number;

  constructor(message: string, timeout: number, options?: ErrorOptions) {
    super(message, options);
    this.timeout = timeout;
  }
}

/** The caller's `signal` aborted the call. The remote side was told to cancel. */
export class AbortError extends Error {
  override readonly name = "AbortError";
}

/**
 * The connection closed (or was never open) before the call settled. The call's
 * outcome on the remote side is unknown.
 */
export class ConnectionClosedError extends Error {
  override readonly name = "ConnectionClosedError";
}

/** A message was larger than the receiver's frame limit and was not sent. */
export class FrameTooLargeError extends Error {
  override readonly name = "FrameTooLargeError";
  /** The error code for the wire, -32001. */
  readonly code = -32001;
  /** The frame's size in bytes. */
  readonly size: number;
  /** The limit it exceeded. */
  readonly limit: number;

  constructor(size: number, limit: number, options?: ErrorOptions) {
    super(`Frame of ${size} bytes exceeds the limit of ${limit} bytes (maxFrameBytes)`, options);
    this.size = size;
    this.limit = limit;
  }
}

/** The authentication handshake failed: wrong key, no answer in time, or a malformed message. */
export class AuthenticationError extends Error {
  override readonly name = "AuthenticationError";
}

/** The peer does not speak this protocol (HTTP, TLS on a plain socket, or the reverse). */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  /** The error code, -32008 for a mismatch. */
  readonly code: number;
  constructor(message: string, code = -32008, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}
