export { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from "./backoff.js";
export {
  type BaseConnectOptions,
  Client,
  type ClientEvents,
  type ClientState,
  type ConnectOptions,
  connect,
  DEFAULT_CONNECT_TIMEOUT,
  DEFAULT_MAX_QUEUED_CALLS,
  type ReconnectAttempt,
  type ReconnectOptions,
} from "./client.js";
export {
  DEFAULT_HEARTBEAT_INTERVAL,
  DEFAULT_HEARTBEAT_TIMEOUT,
  type HeartbeatOptions,
} from "./heartbeat.js";
