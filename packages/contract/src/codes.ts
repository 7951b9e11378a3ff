/**
 * Every error code ezipc sends or understands: JSON-RPC 2.0's own (-32700…-32603)
 * and the library's, in the range the specification leaves to implementations
 * (-32000…-32099).
 */
export const ErrorCodes = {
  /** Invalid JSON was received (or the frame was not valid UTF-8). */
  ParseError: -32700,
  /** The JSON sent is not a valid Request object. */
  InvalidRequest: -32600,
  /** The method does not exist or is not available. */
  MethodNotFound: -32601,
  /** Invalid method parameters: `data` holds zod's issues. */
  InvalidParams: -32602,
  /** Internal error: the handler failed. No message or stack crosses the wire. */
  InternalError: -32603,
  /** The caller gave up (signal aborted); sent to handlers via `ctx.signal`. */
  RequestCancelled: -32000,
  /** A frame was larger than the receiver's `maxFrameBytes`. */
  FrameTooLarge: -32001,
  /** The caller's deadline passed before the handler finished. */
  DeadlineExceeded: -32002,
  /** Too many calls in flight on this connection; retry later. */
  Overloaded: -32003,
  /** The peer refused this call (authorization hook). */
  Unauthorized: -32004,
  /** The server is shutting down and takes no new calls. */
  ShuttingDown: -32005,
  /** JSON nested deeper than the receiver's `maxDepth`. */
  TooDeep: -32006,
  /** A batch had more entries than the receiver's `maxBatchSize`. */
  BatchTooLarge: -32007,
  /** The peer does not speak this protocol (an HTTP request or TLS hello on a plain socket). */
  ProtocolMismatch: -32008,
} as const;

/** One of the numeric codes in {@link ErrorCodes}. */
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** The standard message for each code, as the JSON-RPC 2.0 specification words them. */
export const ErrorMessages: Readonly<Record<number, string>> = {
  [ErrorCodes.ParseError]: "Parse error",
  [ErrorCodes.InvalidRequest]: "Invalid Request",
  [ErrorCodes.MethodNotFound]: "Method not found",
  [ErrorCodes.InvalidParams]: "Invalid params",
  [ErrorCodes.InternalError]: "Internal error",
  [ErrorCodes.RequestCancelled]: "Request cancelled",
  [ErrorCodes.FrameTooLarge]: "Frame too large",
  [ErrorCodes.DeadlineExceeded]: "Deadline exceeded",
  [ErrorCodes.Overloaded]: "Too many calls in flight",
  [ErrorCodes.Unauthorized]: "Unauthorized",
  [ErrorCodes.ShuttingDown]: "Server is shutting down",
  [ErrorCodes.TooDeep]: "JSON nested too deeply",
  [ErrorCodes.BatchTooLarge]: "Batch too large",
  [ErrorCodes.ProtocolMismatch]: "Peer is not speaking the ezipc protocol",
};
