import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The two real socket kinds every socket suite runs over. */
export type SocketKind = "unix" | "tcp";

/** A place to listen: a fresh temp-dir Unix socket path, or TCP on 127.0.0.1 port 0. */
export interface ListenPlace {
  readonly address: string;
  /** Removes the temp dir (Unix); a no-op for TCP. */
  cleanup(): void;
}

/** Builds a fresh listen address for `kind`. */
export function listenPlace(kind: SocketKind): ListenPlace {
  if (kind === "tcp") return { address: "tcp://127.0.0.1:0", cleanup: () => {} };
  const dir = mkdtempSync(join(tmpdir(), "ezipc-test-"));
  return {
    address: `unix:${join(dir, "s.sock")}`,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Encodes one frame: a 4-byte unsigned big-endian length, then the payload bytes. */
export function frame(payload: string | Uint8Array): Buffer {
  const body = typeof payload === "string" ? Buffer.from(payload, "utf8") : Buffer.from(payload);
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, 4);
  return out;
}

/** A 4-byte big-endian length header alone. */
export function header(length: number): Buffer {
  const out = Buffer.allocUnsafe(4);
  out.writeUInt32BE(length, 0);
  return out;
}

/**
 * A client that speaks raw frames over a real socket, bypassing ezipc's client: the test
 * writes exact bytes and reads back whole frames with its own little decoder.
 */
export class RawClient {
  readonly socket: Socket;
  /** Resolves once the socket emitted 'close' (never rejects). */
  readonly closed: Promise<void>;
  #buffer: Buffer = Buffer.alloc(0);
  readonly #frames: Buffer[] = [];
  readonly #waiters: { resolve: (b: Buffer) => void; reject: (e: Error) => void }[] = [];
  #ended = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    // Errors (ECONNRESET when the server destroys us) are expected in bad-input tests;
    // the test observes them through 'close' and next() rejecting.
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    this.closed = new Promise<void>((resolve) => {
      socket.once("close", () => {
        this.#ended = true;
        for (const w of this.#waiters.splice(0)) {
          w.reject(new Error("socket closed before a frame arrived"));
        }
        resolve();
      });
    });
  }

  /** Connects to an ezipc server address (`unix:/path` or `tcp://host:port`). */
  static connect(address: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      let socket: Socket;
      if (address.startsWith("unix:")) {
        socket = createConnection(address.slice("unix:".length));
      } else {
        const m = /^tcp:\/\/([^:]+):(\d+)$/.exec(address);
        if (!m) throw new Error(`unsupported test address ${address}`);
        socket = createConnection({ host: m[1]!, port: Number(m[2]) });
      }
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        resolve(new RawClient(socket));
      });
    });
  }

  /** Whether the socket has closed. */
  get isClosed(): boolean {
    return this.#ended;
  }

  /** Writes raw bytes (no framing). Resolves once handed to the OS. */
  write(bytes: Uint8Array | string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(bytes, (error) => (error ? reject(error) : resolve()));
    });
  }

  /** Writes one frame holding `payload` (a string is sent as UTF-8 exactly as given). */
  send(payload: string | Uint8Array): Promise<void> {
    return this.write(frame(payload));
  }

  /** The next whole frame's payload bytes. Rejects if the socket closes first. */
  nextRaw(): Promise<Buffer> {
    const ready = this.#frames.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    if (this.#ended) return Promise.reject(new Error("socket closed before a frame arrived"));
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** The next whole frame, parsed as JSON. */
  async next(): Promise<any> {
    return JSON.parse((await this.nextRaw()).toString("utf8"));
  }

  /** Sends one frame and returns the next frame received, parsed. */
  async request(payload: string | Uint8Array): Promise<any> {
    await this.send(payload);
    return this.next();
  }

  /** Frames received but not yet read. */
  get unread(): number {
    return this.#frames.length;
  }

  /** Every frame received and not yet read, taken. */
  drain(): Buffer[] {
    return this.#frames.splice(0);
  }

  /** Destroys the socket and waits for 'close'. */
  async destroy(): Promise<void> {
    this.socket.destroy();
    await this.closed;
  }

  #onData(chunk: Buffer): void {
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    // Bounded: each iteration consumes at least 4 bytes of the finite buffer.
    while (this.#buffer.length >= 4) {
      const size = this.#buffer.readUInt32BE(0);
      if (this.#buffer.length < 4 + size) break;
      const payload = Buffer.from(this.#buffer.subarray(4, 4 + size));
      this.#buffer = this.#buffer.subarray(4 + size);
      const waiter = this.#waiters.shift();
      if (waiter) waiter.resolve(payload);
      else this.#frames.push(payload);
    }
  }
}

/** A promise with its resolve function exposed, for handlers that wait on the test. */
export interface Gate<T = void> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
}

/** Creates a {@link Gate}. */
export function gate<T = void>(): Gate<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
