// The heartbeat lives in the protocol, shared by client and server.
export {
  DEFAULT_HEARTBEAT_INTERVAL,
  DEFAULT_HEARTBEAT_TIMEOUT,
  Heartbeat,
  type HeartbeatOptions,
} from "@ezipc/protocol";
