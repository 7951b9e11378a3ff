export {
  type AnyHandler,
  createDispatchTable,
  createRemoteTable,
  type DispatchTable,
  type LocalEntry,
  type RemoteEntry,
  type RemoteTable,
} from "./dispatch.js";
export {
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FrameDecoder,
  type FrameDecoderEvents,
  HEADER_BYTES,
  sniffForeignProtocol,
  writeHeader,
} from "./frame.js";
export {
  DEFAULT_HEARTBEAT_INTERVAL,
  DEFAULT_HEARTBEAT_TIMEOUT,
  Heartbeat,
  type HeartbeatOptions,
  type HeartbeatPeer,
  type HeartbeatTransport,
} from "./heartbeat.js";
export { createMemoryTransportPair } from "./memory-transport.js";
export {
  deeperThan,
  errorResponse,
  isValidId,
  type RequestId,
  type RequestMessage,
  type ResponseMessage,
} from "./message.js";
export {
  type Authorize,
  DEFAULT_MAX_BATCH_SIZE,
  DEFAULT_MAX_DEPTH,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_TIMEOUT,
  type ErrorReport,
  Peer,
  type PeerOptions,
} from "./peer.js";
export type { Transport, TransportEvents } from "./transport.js";
