export {
  type BaseConnectOptions,
  Client,
  type ClientEvents,
  type ConnectOptions,
  connect,
  DEFAULT_CONNECT_TIMEOUT,
} from "./client.js";
