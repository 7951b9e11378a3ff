/**
 * A transport carries whole frames between two peers: the protocol never sees a socket.
 *
 * A frame's payload is opaque bytes here (UTF-8 JSON after the handshake; binary
 * handshake messages before it). The transport adds and strips the 4-byte length
 * prefix, enforces frame limits and honours backpressure.
 */
export interface Transport {
  /**
   * Queues one frame. Frames queued in one tick are written together.
   * Throws {@link FrameTooLargeError} when the payload exceeds the peer's frame limit
   * and {@link ConnectionClosedError} when the transport is closed.
   */
  send(payload: string | Uint8Array): void;
  /**
   * Optional: queues one frame whose UTF-8 payload is the concatenation of `parts`, without
   * joining them into one string first. The peer uses it for large params and results: the
   * JSON of a megabyte-sized value is then written once into the outgoing buffer rather than
   * copied into a joined string and then written.
   */
  sendParts?(parts: readonly string[]): void;
  /** Resolves once everything queued so far has been handed to the operating system. */
  flushed(): Promise<void>;
  /**
   * Starts delivering events to `events`. Calling it again hands the stream to a new owner
   * (the handshake reads the first frames, the peer the rest).
   */
  start(events: TransportEvents): void;
  /** Closes gracefully after queued frames are written. Idempotent. */
  close(): void;
  /** Closes at once, dropping queued frames. Idempotent. */
  destroy(error?: Error): void;
  /** Whether `close` or `destroy` was called or the other side went away. */
  readonly closed: boolean;
  /**
   * When bytes last arrived (`Date.now()`), for a heartbeat. Optional: a transport without
   * it gets no heartbeat.
   */
  readonly lastReceived?: number;
  /** Bytes queued but not yet accepted by the operating system. */
  readonly bufferedBytes: number;
  /**
   * The largest frame accepted from now on. A handshake lowers it (256 bytes) so an
   * unauthenticated peer cannot make us buffer much; it is raised again afterwards.
   */
  maxFrameBytes: number;
  /**
   * Decodes a frame's payload as UTF-8, throwing `TypeError` when it is not valid UTF-8.
   * Optional: a runtime with a faster decoder than `TextDecoder` provides it.
   */
  decodeText?(payload: Uint8Array): string;
}

/**
 * The callbacks a transport delivers to its owner. A transport calls them as methods of
 * the object it was given (`events.frame(payload)`), never detached: the peer's are
 * methods of one small object per connection, not closures.
 */
export interface TransportEvents {
  /** One whole frame arrived. The payload is only valid during the call. */
  frame(payload: Uint8Array): void;
  /**
   * A frame was refused without being buffered (over the size limit). `head` holds the
   * first bytes seen, for diagnostics. The transport stays usable unless `fatal`.
   */
  frameError?(error: Error & { code: number }, fatal: boolean): void;
  /** The transport closed; `error` is set when it did not close cleanly. Called once. */
  close(error?: Error): void;
}
