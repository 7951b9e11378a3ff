export { type Address, formatAddress, isLoopbackHost, parseAddress } from "./address.js";
export { nodeHandshakeCrypto } from "./handshake-crypto.js";
export {
  type AuthOptions,
  authenticate,
  DEFAULT_HANDSHAKE_TIMEOUT,
  loadPem,
  nodeTlsOptions,
  type PeerCertificate,
  peerCertificateOf,
  type TlsOptions,
} from "./security.js";
export {
  DEFAULT_FRAME_TIMEOUT,
  SocketTransport,
  type SocketTransportOptions,
} from "./socket-transport.js";
