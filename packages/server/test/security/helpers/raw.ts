import { createConnection, type Socket } from "node:net";
import type { Cleanups } from "./cleanup.js";

/** Encodes one frame: a 4-byte unsigned big-endian length, then the payload. */
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
  out.writeUInt32BE(length >>> 0, 0);
  return out;
}

/**
 * A hostile or naive peer on a real socket: writes exact bytes, reads whole frames with
 * its own decoder, and exposes the socket's close. Destroyed at cleanup.
 */
export class RawSocket {
  readonly socket: Socket;
  /** Resolves once the socket emitted 'close' (never rejects). */
  readonly closed: Promise<void>;
  #buffer: Buffer = Buffer.alloc(0);
  readonly #frames: Buffer[] = [];
  readonly #waiters: { resolve: (b: Buffer) => void; reject: (e: Error) => void }[] = [];
  #ended = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    // A reset by the server is an expected outcome here; 'close' and next() report it.
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    this.closed = new Promise<void>((resolve) => {
      socket.once("close", () => {
        this.#ended = true;
        for (const w of this.#waiters.splice(0)) w.reject(new Error("socket closed"));
        resolve();
      });
    });
  }

  /** Connects to `unix:/path` or `tcp://host:port`; the socket is destroyed at cleanup. */
  static connect(cleanups: Cleanups, address: string): Promise<RawSocket> {
    return new Promise((resolve, reject) => {
      const tcp = /^tcp:\/\/(.+):(\d+)$/.exec(address);
      const socket = tcp
        ? createConnection({ host: tcp[1]!, port: Number(tcp[2]) })
        : createConnection(address.replace(/^unix:/, ""));
      cleanups.add(socket, (s) => s.destroy());
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        resolve(new RawSocket(socket));
      });
    });
  }

  get isClosed(): boolean {
    return this.#ended;
  }

  /** Writes raw bytes; resolves once handed to the OS. */
  write(bytes: Uint8Array | string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(bytes, (error) => (error ? reject(error) : resolve()));
    });
  }

  /** Writes one frame. */
  send(payload: string | Uint8Array): Promise<void> {
    return this.write(frame(payload));
  }

  /** The next whole frame's payload; rejects if the socket closes first. */
  nextRaw(): Promise<Buffer> {
    const ready = this.#frames.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    if (this.#ended) return Promise.reject(new Error("socket closed"));
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** The next whole frame, parsed as JSON. */
  async next(): Promise<any> {
    return JSON.parse((await this.nextRaw()).toString("utf8"));
  }

  /** Every frame received and not yet read, taken. */
  drain(): Buffer[] {
    return this.#frames.splice(0);
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
