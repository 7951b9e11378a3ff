import { isAscii, isUtf8 } from "node:buffer";
import type { Duplex } from "node:stream";
import { ConnectionClosedError, FrameTooLargeError, ProtocolError } from "@ezipc/contract";
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameDecoder,
  type FrameDecoderEvents,
  HEADER_BYTES,
  sniffForeignProtocol,
} from "../frame.js";
import type { Transport, TransportEvents } from "../transport.js";

/** The default deadline for a started frame to complete: 30 s (slowloris defence). */
export const DEFAULT_FRAME_TIMEOUT = 30_000;

/** Options of {@link SocketTransport}. */
export interface SocketTransportOptions {
  /**
   * Largest frame payload accepted; larger ones are discarded unbuffered and answered
   * with -32001. Also the limit for frames we send (the peer is assumed to use the same).
   * @default 16 MiB
   */
  maxFrameBytes?: number;
  /** Largest frame payload we send, when the peer's limit differs from ours. @default maxFrameBytes */
  peerMaxFrameBytes?: number;
  /**
   * Bytes that may wait in the outgoing queue (a peer that does not read). Past it the
   * connection is dropped rather than memory growing without bound.
   * @default 4 × maxFrameBytes (64 MiB)
   */
  maxWriteBufferBytes?: number;
  /**
   * Milliseconds within which a frame, once its first byte arrived, must complete; else the
   * connection closes (slowloris). `0` disables it.
   * @default 30_000
   */
  frameTimeout?: number;
  /**
   * Milliseconds without any byte in either direction after which the connection is
   * closed. `0` disables it (heartbeats detect dead peers instead).
   * @default 0
   */
  idleTimeout?: number;
}

/** Set in `SocketTransport`'s static block, where it may reach the transport's private members. */
let DecoderEvents: new (transport: SocketTransport) => FrameDecoderEvents;

/**
 * A {@link Transport} over a Node stream socket (`net.Socket`, `tls.TLSSocket`, or any
 * `Duplex`): 4-byte length-prefixed frames, one tick's writes coalesced into one
 * `write`, and a bounded outgoing queue.
 */
export class SocketTransport implements Transport {
  readonly socket: Duplex;
  readonly #decoder: FrameDecoder;
  readonly #peerMax: number;
  readonly #maxBuffered: number;
  readonly #frameTimeout: number;
  #events: TransportEvents | undefined;
  #queue: (string | Uint8Array | readonly string[])[] = [];
  /** Each queued payload's byte size, or -1 for a short string measured as it is written. */
  #queueSizes: number[] = [];
  /** Bytes queued, headers included; an unmeasured string counts 3 per UTF-16 unit (its most). */
  #queueBytes = 0;
  /** How many queued strings are unmeasured. */
  #unmeasured = 0;
  #flushScheduled = false;
  #lastReceived = Date.now();
  #waiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  /** The promise `flushed()` hands out until the current batch is written. */
  #batch: Promise<void> | undefined;
  #closed = false;
  #ending = false;
  #error: Error | undefined;
  #frameTimer: ReturnType<typeof setTimeout> | undefined;
  #framesSeen = 0;
  #timerFrame = -1;
  /** Chunks that arrived before `start`; allocated only if some do. */
  #early: Uint8Array[] | undefined;
  #started = false;

  constructor(socket: Duplex, options: SocketTransportOptions = {}) {
    this.socket = socket;
    const max = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.#peerMax = options.peerMaxFrameBytes ?? max;
    this.#maxBuffered = options.maxWriteBufferBytes ?? 4 * Math.max(max, this.#peerMax);
    this.#frameTimeout = options.frameTimeout ?? DEFAULT_FRAME_TIMEOUT;
    this.#decoder = new FrameDecoder(new DecoderEvents(this), max, Buffer.allocUnsafe);
    socket.on("data", this.#onData);
    socket.on("error", (error: Error) => {
      this.#error ??= error;
    });
    socket.on("close", () => this.#finalize());
    const idle = options.idleTimeout ?? 0;
    if (idle > 0 && "setTimeout" in socket) {
      const net = socket as Duplex & { setTimeout(ms: number, cb: () => void): void };
      net.setTimeout(idle, () =>
        this.destroy(
          new ConnectionClosedError(`Connection idle for ${idle} ms (idleTimeout); closed`),
        ),
      );
    }
    if (socket.destroyed) queueMicrotask(() => this.#finalize());
  }

  static {
    // What the decoder reports, as one small object per connection rather than closures.
    DecoderEvents = class implements FrameDecoderEvents {
      readonly #transport: SocketTransport;
      constructor(transport: SocketTransport) {
        this.#transport = transport;
      }
      frame(payload: Uint8Array): void {
        const transport = this.#transport;
        transport.#framesSeen++;
        transport.#events?.frame(payload);
      }
      oversize(length: number, head: Uint8Array): void {
        this.#transport.#oversize(length, head);
      }
    };
  }

  #oversize(length: number, head: Uint8Array): void {
    this.#framesSeen++;
    const foreign = sniffForeignProtocol(head);
    if (foreign !== undefined) {
      const error = new ProtocolError(`The peer is not speaking ezipc: this looks like ${foreign}`);
      this.#events?.frameError?.(Object.assign(error, { code: error.code }), true);
      if (foreign.includes("HTTP request")) {
        // Someone pointed curl or a browser at us: answer in words they can read.
        this.#error ??= error;
        this.#ending = true;
        this.socket.end(HTTP_REFUSAL);
        // Closed once written, whether or not the client hangs up.
        setTimeout(() => this.socket.destroy(), 1_000).unref();
        return;
      }
      this.destroy(error);
      return;
    }
    const error = new FrameTooLargeError(length, this.#decoder.maxFrameBytes);
    this.#events?.frameError?.(error, false);
  }

  get closed(): boolean {
    return this.#closed || this.#ending;
  }

  get maxFrameBytes(): number {
    return this.#decoder.maxFrameBytes;
  }

  set maxFrameBytes(max: number) {
    this.#decoder.maxFrameBytes = max;
  }

  get bufferedBytes(): number {
    return this.#queueBytes + this.socket.writableLength;
  }

  start(events: TransportEvents): void {
    this.#events = events;
    const first = !this.#started;
    this.#started = true;
    const held = this.#early;
    this.#early = undefined;
    if (first && held) for (const chunk of held) this.#onData(chunk);
    if (this.#closed) events.close(this.#error);
  }

  /** When bytes last arrived (`Date.now()`): what a heartbeat watches. */
  get lastReceived(): number {
    return this.#lastReceived;
  }

  #onData = (chunk: Uint8Array): void => {
    this.#lastReceived = Date.now();
    if (!this.#started) {
      if (this.#early === undefined) this.#early = [];
      this.#early.push(chunk);
      return;
    }
    if (this.#closed) return;
    this.#decoder.push(chunk);
    if (this.#frameTimeout > 0) this.#watchFrame();
  };

  /** Arms the frame-completion deadline while a frame is partly received. */
  #watchFrame(): void {
    if (this.#decoder.idle) {
      if (this.#frameTimer !== undefined) {
        clearTimeout(this.#frameTimer);
        this.#frameTimer = undefined;
      }
      return;
    }
    if (this.#frameTimer !== undefined && this.#timerFrame === this.#framesSeen) return;
    // A new frame is in progress: its own deadline starts now.
    this.#timerFrame = this.#framesSeen;
    if (this.#frameTimer !== undefined) this.#frameTimer.refresh();
    else {
      this.#frameTimer = setTimeout(() => {
        this.#frameTimer = undefined;
        if (!this.#decoder.idle && this.#timerFrame === this.#framesSeen) {
          this.destroy(
            new ProtocolError(
              `A frame did not complete within ${this.#frameTimeout} ms (frameTimeout); closing`,
              -32600,
            ),
          );
        }
      }, this.#frameTimeout);
      this.#frameTimer.unref?.();
    }
  }

  send(payload: string | Uint8Array): void {
    if (this.#closed || this.#ending) throw new ConnectionClosedError("Connection is closed");
    if (typeof payload === "string") {
      // A short string that cannot be over the limit even at 3 bytes per UTF-16 unit is
      // not measured now: the flush writes it and reads its size from the write (measuring
      // first cost a tenth of a small call's send path).
      if (payload.length <= UNMEASURED_CHARS && payload.length * 3 <= this.#peerMax) {
        this.#enqueue(payload, -1);
      } else {
        this.#enqueue(payload, Buffer.byteLength(payload));
      }
    } else {
      this.#enqueue(payload, payload.length);
    }
  }

  sendParts(parts: readonly string[]): void {
    if (this.#closed || this.#ending) throw new ConnectionClosedError("Connection is closed");
    let size = 0;
    for (const part of parts) size += Buffer.byteLength(part);
    this.#enqueue(parts, size);
  }

  /** Queues one frame; `size` is -1 for a string whose size the flush finds out. */
  #enqueue(payload: string | Uint8Array | readonly string[], size: number): void {
    if (size > this.#peerMax) throw new FrameTooLargeError(size, this.#peerMax);
    this.#queue.push(payload);
    this.#queueSizes.push(size);
    if (size === -1) {
      this.#queueBytes += HEADER_BYTES + 3 * (payload as string).length;
      this.#unmeasured++;
    } else {
      this.#queueBytes += HEADER_BYTES + size;
    }
    // Over the limit by the upper bound: the exact count decides.
    if (this.bufferedBytes > this.#maxBuffered && this.#unmeasured > 0) this.#measureQueue();
    if (this.bufferedBytes > this.#maxBuffered) {
      this.destroy(
        new ConnectionClosedError(
          `Outgoing queue exceeded ${this.#maxBuffered} bytes (maxWriteBufferBytes): the peer is not reading`,
        ),
      );
      return;
    }
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      process.nextTick(this.#flush);
    }
  }

  decodeText(payload: Uint8Array): string {
    const bytes = Buffer.isBuffer(payload)
      ? payload
      : Buffer.from(payload.buffer, payload.byteOffset, payload.length);
    // A large ASCII payload (most JSON) decodes faster as Latin-1, which is then the same
    // text: checking is a SIMD scan, while the UTF-8 decoder works byte by byte.
    if (bytes.length >= 4096 && bytes.length < EXTERN_APEX && isAscii(bytes)) {
      return bytes.toString("latin1");
    }
    const text = bytes.toString("utf8");
    // Node decodes invalid sequences to U+FFFD; only then is a full validation needed.
    if (text.includes("\uFFFD") && !isUtf8(bytes)) throw new TypeError("Frame is not valid UTF-8");
    return text;
  }

  flushed(): Promise<void> {
    if (this.#closed) return Promise.reject(new ConnectionClosedError("Connection is closed"));
    if (this.#queue.length === 0 && this.socket.writableLength === 0) return Promise.resolve();
    // Everything sent in one tick is written together, so one promise serves them all.
    if (this.#batch !== undefined) return this.#batch;
    this.#batch = new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
    });
    if (this.#queue.length === 0 && !this.#flushScheduled) {
      // Everything is already in the socket; resolve once it drained.
      this.#flushScheduled = true;
      process.nextTick(this.#flush);
    }
    return this.#batch;
  }

  /** Measures the queue's unmeasured strings, so `#queueBytes` is exact. */
  #measureQueue(): void {
    const queue = this.#queue;
    const sizes = this.#queueSizes;
    for (let i = 0; i < queue.length; i++) {
      if (sizes[i] !== -1) continue;
      const text = queue[i] as string;
      const size = Buffer.byteLength(text);
      sizes[i] = size;
      this.#queueBytes -= 3 * text.length - size;
    }
    this.#unmeasured = 0;
  }

  /** Writes every queued frame in one buffer and one `write` call. */
  #flush = (): void => {
    this.#flushScheduled = false;
    if (this.#closed) return;
    // A large batch is measured first: its buffer is then exact. A small one is assembled
    // in a shared scratch buffer (room for 3 bytes per unit) and copied out at its size, so
    // what the socket holds is never more than what was written.
    if (this.#unmeasured > 0 && this.#queueBytes > SCRATCH_BYTES) this.#measureQueue();
    const queue = this.#queue;
    const sizes = this.#queueSizes;
    const roomBytes = this.#queueBytes;
    const unmeasured = this.#unmeasured > 0;
    this.#queue = [];
    this.#queueSizes = [];
    this.#queueBytes = 0;
    this.#unmeasured = 0;
    const waiters = this.#waiters;
    this.#waiters = [];
    this.#batch = undefined;
    if (queue.length === 0) {
      if (waiters.length > 0) this.socket.write(EMPTY, () => settle(waiters, this.#error));
      return;
    }
    const room = unmeasured ? scratchBuffer() : Buffer.allocUnsafe(roomBytes);
    let at = 0;
    for (let i = 0; i < queue.length; i++) {
      const payload = queue[i]!;
      let size = sizes[i]!;
      const body = at + HEADER_BYTES;
      if (typeof payload === "string") {
        // Unmeasured, it still fits: the room holds 3 bytes per UTF-16 unit.
        if (size === -1) size = room.write(payload, body, "utf8");
        else room.write(payload, body, size, "utf8");
      } else if (payload instanceof Uint8Array) room.set(payload, body);
      else {
        let part = body;
        for (const text of payload as readonly string[]) part += room.write(text, part, "utf8");
      }
      room.writeUInt32BE(size, at);
      at = body + size;
    }
    let buffer = room;
    if (unmeasured) {
      buffer = Buffer.allocUnsafe(at);
      room.copy(buffer, 0, 0, at);
    }
    if (waiters.length > 0) {
      this.socket.write(buffer, (error) => settle(waiters, error ?? undefined));
    } else {
      this.socket.write(buffer);
    }
  };

  close(): void {
    if (this.#closed || this.#ending) return;
    this.#ending = true;
    if (this.#flushScheduled) this.#flush();
    this.socket.end();
    // A peer that never acknowledges the close must not hold the handle forever.
    const timer = setTimeout(() => this.socket.destroy(), 5_000);
    timer.unref();
    this.socket.once("close", () => clearTimeout(timer));
  }

  destroy(error?: Error): void {
    if (this.#closed) return;
    this.#error ??= error;
    this.socket.destroy();
    this.#finalize();
  }

  #finalize(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#frameTimer !== undefined) clearTimeout(this.#frameTimer);
    this.#queue = [];
    this.#queueSizes = [];
    this.#queueBytes = 0;
    this.#unmeasured = 0;
    const waiters = this.#waiters;
    this.#waiters = [];
    this.#batch = undefined;
    settle(waiters, new ConnectionClosedError("Connection closed", { cause: this.#error }));
    if (!this.socket.destroyed) this.socket.destroy();
    // Before start(), the owner learns of the close when it starts.
    if (this.#started) this.#events?.close(this.#error);
  }
}

const EMPTY = Buffer.alloc(0);

/** Strings up to this many UTF-16 units are queued unmeasured (at most 3 KiB each). */
const UNMEASURED_CHARS = 1024;
/** A batch with unmeasured strings and at most this many bytes of room is assembled in scratch. */
const SCRATCH_BYTES = 64 * 1024;
let scratch: Buffer | undefined;

/** The scratch buffer every transport assembles small batches in (flushes never interleave). */
function scratchBuffer(): Buffer {
  scratch ??= Buffer.allocUnsafe(SCRATCH_BYTES);
  return scratch;
}

/**
 * Node makes a Latin-1 string of 1,031,913 bytes or more (its `EXTERN_APEX`) an external
 * string: memory outside V8's heap that V8 only counts, and whose growth makes it collect
 * sooner. Past that size the payload is decoded as UTF-8, which Node keeps on the heap.
 */
const EXTERN_APEX = 1_031_913;
const HTTP_REFUSAL =
  "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" +
  "This is an ezipc server: it speaks length-prefixed JSON-RPC 2.0, not HTTP.\n";

function settle(
  waiters: { resolve: () => void; reject: (e: Error) => void }[],
  error: Error | undefined,
): void {
  for (const w of waiters) {
    if (error)
      w.reject(
        error instanceof ConnectionClosedError
          ? error
          : new ConnectionClosedError(error.message, { cause: error }),
      );
    else w.resolve();
  }
}
