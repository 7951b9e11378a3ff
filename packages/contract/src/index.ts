export { type ErrorCode, ErrorCodes, ErrorMessages } from "./codes.js";
export {
  type Contract,
  type ContractSide,
  type Definition,
  defineContract,
  type MethodDef,
  type MethodOptions,
  method,
  type NotificationDef,
  notification,
  type ParamsSchema,
} from "./contract.js";
export {
  AbortError,
  AuthenticationError,
  ConnectionClosedError,
  FrameTooLargeError,
  ProtocolError,
  RpcError,
  type RpcErrorJSON,
  TimeoutError,
  ValidationError,
  type ValidationIssue,
} from "./errors.js";
export type {
  CallArgs,
  CallOptions,
  ConnectionInfo,
  HandlerContext,
  Handlers,
  InferHandlerParams,
  InferHandlerResult,
  InferInput,
  InferOutput,
  InferParams,
  InferResult,
  MaybePromise,
  MethodNames,
  NotificationNames,
  NotifyArgs,
  RemoteApi,
} from "./types.js";
export { isPlainSchema, type Validator, validator } from "./validate.js";
