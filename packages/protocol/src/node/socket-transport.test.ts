import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Duplex } from "node:stream";
import { FrameTooLargeError } from "@ezipc/contract";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SocketTransport } from "./socket-transport.js";

// SocketTransport over a real Unix socket; the other end reads raw bytes, so the length
// headers themselves are checked, not only what a second SocketTransport makes of them.

let dir: string;
let server: Server | undefined;
const sockets: Socket[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "ezipc-transport-"));
});

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  rmSync(dir, { recursive: true, force: true });
});

/** A connected pair: `local` is the socket a transport will use, `remote` the raw other end. */
async function socketPair(): Promise<{ local: Socket; remote: Socket }> {
  const path = join(dir, "t.sock");
  const listening = createServer();
  server = listening;
  const accepted = new Promise<Socket>((resolve) => listening.once("connection", resolve));
  await new Promise<void>((resolve) => listening.listen(path, () => resolve()));
  const local = netConnect(path);
  await new Promise<void>((resolve) => local.once("connect", () => resolve()));
  const remote = await accepted;
  sockets.push(local, remote);
  return { local, remote };
}

/** Reads `count` frames off a raw socket: each one's declared length and its bytes. */
function readFrames(socket: Socket, count: number): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    let pending = Buffer.alloc(0);
    const frames: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 4) {
        const size = pending.readUInt32BE(0);
        if (pending.length < 4 + size) break;
        frames.push(pending.subarray(4, 4 + size));
        pending = pending.subarray(4 + size);
      }
      if (frames.length === count) resolve(frames);
      if (frames.length > count) reject(new Error(`more than ${count} frames`));
    });
  });
}

describe("SocketTransport framing", () => {
  it("frames small strings of any UTF-8 width, bytes and parts written in one tick with exact lengths", async () => {
    const { local, remote } = await socketPair();
    const transport = new SocketTransport(local);
    transport.start({ frame: () => {}, close: () => {} });
    const texts = [
      "plain",
      "é",
      "€uro",
      "😀 and 😀",
      "",
      "\uD800 lone surrogate",
      "a".repeat(5000),
    ];
    const frames = readFrames(remote, texts.length + 2);
    for (const text of texts) transport.send(text);
    transport.send(new Uint8Array([1, 2, 3]));
    transport.sendParts(['{"a":', '"ß"', "}"]);
    await transport.flushed();
    const got = await frames;
    expect(got.slice(0, texts.length).map((b) => b.toString("utf8"))).toStrictEqual(
      // A lone surrogate has no UTF-8 form: it is written as U+FFFD, as Buffer.from does.
      texts.map((t) => t.replace("\uD800", "\uFFFD")),
    );
    expect(got.slice(0, texts.length).map((b) => b.length)).toStrictEqual(
      texts.map((t) => Buffer.byteLength(t)),
    );
    expect([...got[texts.length]!]).toStrictEqual([1, 2, 3]);
    expect(got[texts.length + 1]!.toString("utf8")).toBe('{"a":"ß"}');
    expect(transport.bufferedBytes).toBe(0);
  });

  it("refuses a string over the peer's limit by its UTF-8 size, whether or not its length alone shows it", async () => {
    const { local, remote } = await socketPair();
    const transport = new SocketTransport(local, { peerMaxFrameBytes: 10 });
    transport.start({ frame: () => {}, close: () => {} });
    const frames = readFrames(remote, 2);
    transport.send("ééééé"); // 10 bytes: at the limit
    expect(() => transport.send("éééééé")).toThrow(FrameTooLargeError); // 12 bytes, 6 units
    expect(() => transport.send("a".repeat(11))).toThrow(FrameTooLargeError);
    transport.send("abc");
    await transport.flushed();
    expect((await frames).map((b) => b.toString("utf8"))).toStrictEqual(["ééééé", "abc"]);
  });

  it.each([
    ["ASCII", "x"],
    ["3-byte", "€"],
  ])(
    "a peer that does not read is cut off at maxWriteBufferBytes by real size (%s), and the socket holds only what was written",
    async (_name, char) => {
      const chunks: Buffer[] = [];
      // A socket whose writes are never acknowledged: everything stays buffered.
      const stuck = new Duplex({
        write(chunk: Buffer, _encoding: string, _done: () => void) {
          chunks.push(chunk);
        },
        read() {},
      });
      const limit = 1024 * 1024;
      const transport = new SocketTransport(stuck, { maxWriteBufferBytes: limit, frameTimeout: 0 });
      let closedWith: Error | undefined;
      transport.start({ frame: () => {}, close: (error) => (closedWith = error) });
      const text = char.repeat(1000);
      const frameBytes = 4 + Buffer.byteLength(text);
      let sent = 0;
      try {
        for (let tick = 0; tick < 1000; tick++) {
          for (let i = 0; i < 100; i++) {
            transport.send(text);
            sent++;
          }
          await new Promise((resolve) => setImmediate(resolve));
        }
      } catch {
        // Closed: the peer stopped reading.
      }
      expect(transport.closed).toBe(true);
      expect(closedWith?.message).toMatch(/maxWriteBufferBytes/);
      // Cut off at the limit counted in real bytes: not a third of it, not three times it.
      expect(sent * frameBytes).toBeGreaterThan(limit - frameBytes);
      expect(sent * frameBytes).toBeLessThanOrEqual(limit + frameBytes);
      // Each buffer handed to the socket is exactly the frames written, not a view into a
      // larger one that stays alive with it.
      for (const chunk of chunks) {
        expect(chunk.length % frameBytes).toBe(0);
        if (chunk.length > 4096) expect(chunk.buffer.byteLength).toBe(chunk.length);
      }
    },
  );
});
