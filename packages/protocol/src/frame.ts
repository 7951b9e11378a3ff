/** The default largest frame payload accepted or sent: 16 MiB. */
export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** Size of the length prefix: a 4-byte unsigned big-endian integer. */
export const HEADER_BYTES = 4;

/** What a {@link FrameDecoder} reports. */
export interface FrameDecoderEvents {
  /** One whole frame. The payload may be a view into a chunk; copy it to keep it. */
  frame(payload: Uint8Array): void;
  /**
   * A header announced more than `maxFrameBytes`. The frame's bytes are discarded as
   * they stream in and never buffered; `head` holds the 4 header bytes, which tell an
   * HTTP request or a TLS ClientHello apart from a real (if oversized) frame.
   */
  oversize(length: number, head: Uint8Array): void;
}

/**
 * Incremental decoder of length-prefixed frames: feed it chunks as they arrive, in any
 * split, and it reports the same frames. It never allocates the announced length up
 * front: bytes are kept only as they arrive, and only for frames within the limit.
 */
export class FrameDecoder {
  #max: number;
  readonly #events: FrameDecoderEvents;
  // A header split across chunks is accumulated as a number: no buffer per connection.
  #headerValue = 0;
  #headerFill = 0;
  /** Bytes still expected for the current body (or still to discard), -1 when reading a header. */
  #remaining = -1;
  #discarding = false;
  #parts: Uint8Array[] = [];
  #partBytes = 0;
  readonly #allocate: (size: number) => Uint8Array;

  /**
   * @param allocate makes the buffer a frame that spans chunks is joined into; it is
   * always filled completely, so a runtime may hand out uninitialized memory (Node's
   * `Buffer.allocUnsafe`: zero-filling a fresh megabyte costs more than copying into it).
   */
  constructor(
    events: FrameDecoderEvents,
    maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
    allocate: (size: number) => Uint8Array = (size) => new Uint8Array(size),
  ) {
    this.#events = events;
    this.#max = maxFrameBytes;
    this.#allocate = allocate;
  }

  /** The current frame limit. */
  get maxFrameBytes(): number {
    return this.#max;
  }

  /** Changes the frame limit for frames whose header has not arrived yet (a handshake uses a small one). */
  set maxFrameBytes(max: number) {
    this.#max = max;
  }

  /** Bytes held for a frame not yet complete (0 between frames). */
  get bufferedBytes(): number {
    return this.#remaining === -1 ? this.#headerFill : this.#partBytes + HEADER_BYTES;
  }

  /** Whether the decoder sits between frames (no partial header or body). */
  get idle(): boolean {
    return this.#remaining === -1 && this.#headerFill === 0;
  }

  /** Feeds one chunk; reports every frame it completes, in order. */
  push(chunk: Uint8Array): void {
    let offset = 0;
    const length = chunk.length;
    while (offset < length) {
      if (this.#remaining === -1) {
        // Fast path: a whole header in this chunk and nothing partial before it.
        if (this.#headerFill === 0 && length - offset >= HEADER_BYTES) {
          const size =
            ((chunk[offset]! << 24) >>> 0) +
            (chunk[offset + 1]! << 16) +
            (chunk[offset + 2]! << 8) +
            chunk[offset + 3]!;
          offset += HEADER_BYTES;
          // A whole small frame inside the chunk is delivered as a view: no copy.
          if (size <= this.#max && length - offset >= size) {
            this.#events.frame(chunk.subarray(offset, offset + size));
            offset += size;
            continue;
          }
          this.#begin(size);
          continue;
        }
        this.#headerValue = this.#headerValue * 256 + chunk[offset]!;
        this.#headerFill++;
        offset++;
        if (this.#headerFill < HEADER_BYTES) continue;
        const size = this.#headerValue;
        this.#headerValue = 0;
        this.#begin(size);
        continue;
      }
      const take = Math.min(this.#remaining, length - offset);
      if (!this.#discarding) {
        this.#parts.push(chunk.subarray(offset, offset + take));
        this.#partBytes += take;
      }
      this.#remaining -= take;
      offset += take;
      if (this.#remaining === 0) this.#complete();
    }
  }

  /** Starts a body of `size` bytes after a header (the check comes before any allocation). */
  #begin(size: number): void {
    this.#headerFill = 0;
    if (size > this.#max) {
      this.#discarding = true;
      this.#remaining = size;
      const head = new Uint8Array(HEADER_BYTES);
      writeHeader(head, 0, size);
      this.#events.oversize(size, head);
      return;
    }
    this.#remaining = size;
    if (size === 0) this.#complete();
  }

  #complete(): void {
    const discarded = this.#discarding;
    const parts = this.#parts;
    const size = this.#partBytes;
    this.#remaining = -1;
    this.#discarding = false;
    this.#parts = [];
    this.#partBytes = 0;
    if (discarded) return;
    if (parts.length === 1) {
      this.#events.frame(parts[0]!);
      return;
    }
    const payload = this.#allocate(size);
    let at = 0;
    for (const part of parts) {
      payload.set(part, at);
      at += part.length;
    }
    this.#events.frame(payload);
  }
}

/** Writes the 4-byte big-endian length header of `size` into `target` at `offset`. */
export function writeHeader(target: Uint8Array, offset: number, size: number): void {
  target[offset] = size >>> 24;
  target[offset + 1] = (size >>> 16) & 0xff;
  target[offset + 2] = (size >>> 8) & 0xff;
  target[offset + 3] = size & 0xff;
}

/** Encodes one payload as a whole frame (header + bytes). */
export function encodeFrame(payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(HEADER_BYTES + payload.length);
  writeHeader(frame, 0, payload.length);
  frame.set(payload, HEADER_BYTES);
  return frame;
}

/**
 * Names what a header that is far over the limit most likely is, when it is not a frame
 * at all: an HTTP request ("GET ", "POST", …) or a TLS ClientHello (0x16 0x03). Returns
 * `undefined` for anything else.
 */
export function sniffForeignProtocol(head: Uint8Array): string | undefined {
  if (head[0] === 0x16 && head[1] === 0x03) {
    return "a TLS ClientHello: the peer expects TLS; use a tls:// address on both sides";
  }
  let text = "";
  for (const byte of head) text += String.fromCharCode(byte);
  if (/^(GET |POST|PUT |HEAD|DELE|OPTI|PATC|CONN|TRAC|PRI )$/.test(text)) {
    return `an HTTP request ("${text.trim()} …"): the peer speaks HTTP, not ezipc's length-prefixed JSON-RPC`;
  }
  if (text === "HTTP") return "an HTTP response: the peer is an HTTP server, not an ezipc peer";
  if (text === "SSH-") return "an SSH banner: the peer is an SSH server, not an ezipc peer";
  return undefined;
}
