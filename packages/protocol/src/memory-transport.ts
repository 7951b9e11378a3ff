import { ConnectionClosedError, FrameTooLargeError } from "@ezipc/contract";
import { DEFAULT_MAX_FRAME_BYTES } from "./frame.js";
import type { Transport, TransportEvents } from "./transport.js";

const encoder = new TextEncoder();

/**
 * One end of an in-memory transport pair, for protocol unit tests: frames are delivered
 * to the other end on a later microtask, as a socket would deliver them on a later tick.
 */
class MemoryTransport implements Transport {
  other: MemoryTransport | undefined;
  #events: TransportEvents | undefined;
  #queue: Uint8Array[] = [];
  #closed = false;
  #maxFrameBytes: number;
  /** Every payload this end sent, for assertions. */
  readonly sent: Uint8Array[] = [];

  constructor(maxFrameBytes: number) {
    this.#maxFrameBytes = maxFrameBytes;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
  }

  set maxFrameBytes(max: number) {
    this.#maxFrameBytes = max;
  }

  get bufferedBytes(): number {
    return 0;
  }

  start(events: TransportEvents): void {
    this.#events = events;
    const queued = this.#queue;
    this.#queue = [];
    for (const payload of queued) events.frame(payload);
  }

  send(payload: string | Uint8Array): void {
    if (this.#closed) throw new ConnectionClosedError("Transport is closed");
    const bytes = typeof payload === "string" ? encoder.encode(payload) : payload;
    if (bytes.length > this.#maxFrameBytes) {
      throw new FrameTooLargeError(bytes.length, this.#maxFrameBytes);
    }
    this.sent.push(bytes);
    const other = this.other!;
    queueMicrotask(() => other.deliver(bytes));
  }

  flushed(): Promise<void> {
    return this.#closed
      ? Promise.reject(new ConnectionClosedError("Transport is closed"))
      : Promise.resolve();
  }

  deliver(payload: Uint8Array): void {
    if (this.#closed) return;
    if (this.#events === undefined) this.#queue.push(payload);
    else this.#events.frame(payload);
  }

  close(): void {
    if (this.#closed) return;
    // Let frames already sent arrive first, as a graceful socket close would.
    queueMicrotask(() => {
      this.destroy();
    });
  }

  destroy(error?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#events?.close(error);
    const other = this.other;
    if (other && !other.closed) queueMicrotask(() => other.destroy());
  }
}

/** Creates two connected in-memory transports (for tests of the protocol without sockets). */
export function createMemoryTransportPair(
  maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
): [Transport & { readonly sent: Uint8Array[] }, Transport & { readonly sent: Uint8Array[] }] {
  const a = new MemoryTransport(maxFrameBytes);
  const b = new MemoryTransport(maxFrameBytes);
  a.other = b;
  b.other = a;
  return [a, b];
}
