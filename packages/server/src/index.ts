export { Connection } from "./connection.js";
export {
  type CloseOptions,
  createServer,
  DEFAULT_CLOSE_TIMEOUT,
  DEFAULT_MAX_CONNECTIONS,
  Server,
  type ServerEvents,
  type ServerOptions,
} from "./server.js";
