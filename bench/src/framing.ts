import type { Socket } from "node:net";

/** Largest frame the bench accepts (the large scenario sends 1 MiB strings). */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

/**
 * A socket speaking ezipc's wire framing: a 4-byte big-endian length, then that many bytes of
 * UTF-8. It is the shared floor under RAW, json-rpc-2.0, birpc and capnweb, so those rows differ
 * only in what the library does above the framing.
 *
 * Writes made in one tick are corked together and flushed on `process.nextTick`, so a burst of
 * calls becomes one `writev`. Received chunks are decoded in place; bytes are only copied when a
 * frame straddles chunks, and then once per frame (not once per chunk).
 */
export class FramedSocket {
  readonly socket: Socket;
  private readonly onFrame: (text: string) => void;
  private corked = false;
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes needed before the buffered chunks can yield a frame (4 while the header is short). */
  private need = 4;

  constructor(socket: Socket, onFrame: (text: string) => void) {
    this.socket = socket;
    this.onFrame = onFrame;
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
  }

  /** Frames and queues one message; the tick's writes leave in one syscall. */
  send(text: string): void {
    const length = Buffer.byteLength(text);
    const frame = Buffer.allocUnsafe(4 + length);
    frame.writeUInt32BE(length, 0);
    frame.write(text, 4, "utf8");
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    this.socket.write(frame);
  }

  /** Resolves once the socket's user-space write buffer has drained, if it is over its mark. */
  drained(): Promise<void> | undefined {
    if (!this.socket.writableNeedDrain) return undefined;
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off("drain", done);
        this.socket.off("close", done);
        resolve();
      };
      this.socket.on("drain", done);
      this.socket.on("close", done);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  private receive(input: Buffer): void {
    let chunk = input;
    if (this.buffered > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      if (this.buffered < this.need) return;
      chunk = Buffer.concat(this.chunks, this.buffered);
      this.chunks = [];
      this.buffered = 0;
    }
    let offset = 0;
    while (chunk.length - offset >= 4) {
      const length = chunk.readUInt32BE(offset);
      if (length > MAX_FRAME_BYTES) {
        this.socket.destroy(new Error(`frame of ${length} bytes is over the bench's limit`));
        return;
      }
      if (chunk.length - offset - 4 < length) break;
      const start = offset + 4;
      offset = start + length;
      this.onFrame(chunk.toString("utf8", start, offset));
    }
    if (offset < chunk.length) {
      const rest = chunk.subarray(offset);
      this.chunks.push(rest);
      this.buffered = rest.length;
      this.need = rest.length >= 4 ? 4 + rest.readUInt32BE(0) : 4;
    }
  }
}
