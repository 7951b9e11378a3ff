export { type Address, formatAddress, isLoopbackHost, parseAddress } from "./address.js";
export {
  DEFAULT_FRAME_TIMEOUT,
  SocketTransport,
  type SocketTransportOptions,
} from "./socket-transport.js";
