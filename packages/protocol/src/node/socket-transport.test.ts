import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FrameTooLargeError } from "@ezipc/contract";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SocketTransport } from "./socket-transport.js";

// SocketTransport over a real Unix socket; the other end reads raw bytes, so the length
// headers themselves are checked, not only what a second SocketTransport makes of them.

let dir: string;
let server: Server;
const sockets: Socket[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "ezipc-transport-"));
});

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

/** A connected pair: `local` is the socket a transport will use, `remote` the raw other end. */
async function socketPair(): Promise<{ local: Socket; remote: Socket }> {
  const path = join(dir, "t.sock");
  const accepted = new Promise<Socket>((resolve) => {
    server = createServer(resolve);
    server.listen(path);
  });
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
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
});
