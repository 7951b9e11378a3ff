export { Connection } from "./connection.js";
export {
  type CloseOptions,
  createServer,
  DEFAULT_CLOSE_TIMEOUT,
  DEFAULT_HEARTBEAT_INTERVAL,
  DEFAULT_HEARTBEAT_TIMEOUT,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_UNAUTHENTICATED,
  Server,
  type ServerEvents,
  type ServerOptions,
} from "./server.js";
