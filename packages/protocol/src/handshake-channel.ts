import { AuthenticationError, ConnectionClosedError, RpcError } from "@ezipc/contract";
import { HANDSHAKE_MAX_FRAME_BYTES, type HandshakeChannel } from "./handshake.js";
import type { Transport } from "./transport.js";

/** Each side of the mutual handshake reads exactly three frames. */
const HANDSHAKE_FRAMES_READ = 3;

/** A {@link HandshakeChannel} over a transport, and what is left over after the handshake. */
export interface TransportHandshakeChannel extends HandshakeChannel {
  /**
   * Ends the handshake's ownership of the transport; returns frames that arrived after the
   * handshake's last one (the peer may send its first call right behind its last
   * handshake message), for the new owner to process first.
   */
  release(): Uint8Array[];
}

/**
 * Lends a transport to the authentication handshake. While it runs, frames are capped at
 * 256 bytes, so an unauthenticated peer cannot make us buffer more; the cap is lifted to
 * `maxFrameBytes` synchronously on the handshake's last frame, so a call that arrives in
 * the same packet as that frame is decoded under the normal limit.
 */
export function transportHandshakeChannel(
  transport: Transport,
  maxFrameBytes: number,
): TransportHandshakeChannel {
  const queue: Uint8Array[] = [];
  let waiter: { resolve: (f: Uint8Array) => void; reject: (e: Error) => void } | undefined;
  let failure: Error | undefined;
  let read = 0;
  transport.maxFrameBytes = HANDSHAKE_MAX_FRAME_BYTES;
  const fail = (error: Error) => {
    failure ??= error;
    if (waiter) {
      const w = waiter;
      waiter = undefined;
      w.reject(failure);
    }
  };
  transport.start({
    frame(payload) {
      // The payload may be a view into a socket chunk: keep a copy.
      const frame = payload.slice();
      // A server that refuses us before the handshake (too many connections, shutting
      // down) says why in a JSON-RPC error frame: report that, not a bad key.
      if (read === 0 && frame[0] === 0x7b) {
        const refusal = refusalOf(frame);
        if (refusal !== undefined) {
          fail(refusal);
          return;
        }
      }
      if (++read === HANDSHAKE_FRAMES_READ) transport.maxFrameBytes = maxFrameBytes;
      if (waiter) {
        const w = waiter;
        waiter = undefined;
        w.resolve(frame);
      } else {
        queue.push(frame);
      }
    },
    frameError(error) {
      fail(
        new AuthenticationError(
          `Handshake message larger than ${HANDSHAKE_MAX_FRAME_BYTES} bytes: the peer is not ` +
            "authenticating (does it have an authKey set?)",
          { cause: error },
        ),
      );
    },
    close(error) {
      fail(
        new AuthenticationError(
          "Connection closed during the authentication handshake (wrong key, or the peer " +
            "has no authKey set)",
          { cause: error },
        ),
      );
    },
  });
  return {
    send(frame) {
      transport.send(frame);
    },
    receive(maxBytes) {
      if (failure) return Promise.reject(failure);
      const next = queue.shift();
      if (next !== undefined) {
        if (next.length > maxBytes) {
          return Promise.reject(
            new AuthenticationError(`Handshake message larger than ${maxBytes} bytes`),
          );
        }
        return Promise.resolve(next);
      }
      return new Promise((resolve, reject) => {
        waiter = {
          resolve: (frame) =>
            frame.length > maxBytes
              ? reject(new AuthenticationError(`Handshake message larger than ${maxBytes} bytes`))
              : resolve(frame),
          reject,
        };
      });
    },
    release() {
      transport.maxFrameBytes = maxFrameBytes;
      return queue.splice(0);
    },
  };
}

/** The error a server sent instead of a challenge, as a `ConnectionClosedError`, if it is one. */
function refusalOf(frame: Uint8Array): ConnectionClosedError | undefined {
  try {
    const message = JSON.parse(new TextDecoder().decode(frame)) as { error?: unknown };
    if (typeof message !== "object" || message === null || message.error === undefined) {
      return undefined;
    }
    const error = RpcError.fromJSON(message.error);
    return new ConnectionClosedError(
      `The server refused the connection: ${error.message} (${error.code})`,
      { cause: error },
    );
  } catch {
    return undefined;
  }
}
