// Limits against a real server: fast-check throws random and mutated frames at the frame
// decoder and the dispatcher while a well-behaved client on the same server keeps getting
// correct answers; a client that never reads is dropped with the server's buffering for it
// bounded by maxWriteBufferBytes; connections over maxConnections are refused; handler
// errors do not leak unless exposeErrors is on.
import { createConnection, type Socket } from "node:net";
import { join } from "node:path";
import {
  AuthenticationError,
  type Connection,
  ConnectionClosedError,
  connect,
  createServer,
  defineContract,
  ErrorCodes,
  method,
  notification,
  RpcError,
  type Server,
  type ServerOptions,
} from "ezipc";
import fc from "fast-check";
import { describe, expect, vi } from "vitest";
import { z } from "zod";
import { type Cleanups, ErrorLog, it, openSockets, within } from "./helpers/cleanup.js";
import { frame, header, RawSocket } from "./helpers/raw.js";

const contract = defineContract({
  server: {
    echo: method({
      params: z.object({ text: z.string() }),
      result: z.object({ text: z.string() }),
    }),
    add: method({ params: z.tuple([z.number(), z.number()]), result: z.number() }),
    later: method({ params: z.object({ n: z.number() }), result: z.number() }),
    fail: method({ result: z.string() }),
    note: notification({ params: z.object({ line: z.string() }) }),
  },
  client: {
    tick: notification({ params: z.object({ seq: z.number().int(), pad: z.string() }) }),
  },
});

const SECRET = "secret-detail-7f3a of the handler";

type Kind = "unix" | "tcp";
const KINDS: Kind[] = ["unix", "tcp"];

interface Harness {
  server: Server<typeof contract.server, typeof contract.client>;
  errors: ErrorLog;
  notes: string[];
}

async function start(cleanups: Cleanups, kind: Kind, options: ServerOptions): Promise<Harness> {
  const errors = new ErrorLog();
  const notes: string[] = [];
  const server = createServer(
    contract,
    {
      echo: ({ text }) => ({ text }),
      add: ([a, b]) => a + b,
      later: async ({ n }) => {
        await Promise.resolve();
        return n;
      },
      fail: () => {
        throw new Error(SECRET);
      },
      note: ({ line }) => {
        notes.push(line);
      },
    },
    { ...options, onError: errors.hook },
  );
  cleanups.add(server, (s) => within(s.close({ timeout: 1_000 }), 2_000, "server.close()"));
  await server.listen(
    kind === "unix" ? `unix:${join(cleanups.tempDir(), "s.sock")}` : "tcp://127.0.0.1:0",
  );
  return { server, errors, notes };
}

/** A well-behaved ezipc client, closed at cleanup; `ticks` collects server pushes. */
async function goodClient(
  cleanups: Cleanups,
  server: { readonly address: string },
  options: { authKey?: string } = {},
) {
  const ticks: number[] = [];
  const client = await connect(contract, server.address, {
    ...options,
    handlers: { tick: ({ seq }) => void ticks.push(seq) },
  });
  cleanups.add(client, (c) => c.close());
  return { client, ticks };
}

/** The server-side connection of the next client to connect. */
function nextConnection(server: Harness["server"]): Promise<Connection<typeof contract.client>> {
  return new Promise((resolve) => server.once("connect", resolve));
}

/** Resolves with the error of `connection`'s 'disconnect' event. */
function disconnectOf(
  server: Harness["server"],
  connection: Connection<typeof contract.client>,
): Promise<Error | undefined> {
  return new Promise((resolve) => {
    const listener = (c: Connection<typeof contract.client>, error: Error | undefined) => {
      if (c !== connection) return;
      server.off("disconnect", listener);
      resolve(error);
    };
    server.on("disconnect", listener);
  });
}

/** Every frame the server sends back to garbage must still be a JSON-RPC 2.0 response. */
function expectResponseShape(payload: Buffer): void {
  const message = JSON.parse(payload.toString("utf8"));
  const responses = Array.isArray(message) ? message : [message];
  expect(responses.length).toBeGreaterThan(0);
  for (const r of responses) {
    expect(r.jsonrpc).toBe("2.0");
    expect("id" in r).toBe(true);
    expect("result" in r !== "error" in r).toBe(true);
    if ("error" in r) {
      expect(Number.isInteger(r.error.code)).toBe(true);
      expect(typeof r.error.message).toBe("string");
      // No handler internals cross the wire, whatever the input.
      expect(JSON.stringify(r)).not.toContain(SECRET);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Generators.

const utf8 = (text: string) => Buffer.from(text, "utf8");

/** Valid JSON-RPC messages of this contract (requests, notifications, batches). */
const validMessage: fc.Arbitrary<string> = (() => {
  const id = fc.oneof(fc.integer(), fc.string({ maxLength: 8 }));
  const single = fc.oneof(
    fc
      .record({ id, text: fc.string({ maxLength: 24 }) })
      .map(({ id, text }) => ({ jsonrpc: "2.0", id, method: "echo", params: { text } })),
    fc
      .record({ id, a: fc.integer(), b: fc.integer() })
      .map(({ id, a, b }) => ({ jsonrpc: "2.0", id, method: "add", params: [a, b] })),
    fc
      .record({ id, n: fc.double({ noNaN: true, noDefaultInfinity: true }) })
      .map(({ id, n }) => ({ jsonrpc: "2.0", id, method: "later", params: { n } })),
    id.map((id) => ({ jsonrpc: "2.0", id, method: "fail" })),
    fc
      .string({ maxLength: 16 })
      .map((line) => ({ jsonrpc: "2.0", method: "note", params: { line } })),
  );
  return fc.oneof(
    single.map((m) => JSON.stringify(m)),
    fc.array(single, { minLength: 1, maxLength: 4 }).map((b) => JSON.stringify(b)),
  );
})();

/** `depth` levels of arrays or objects, optionally inside a request's params. */
const deepPayload = fc
  .record({
    depth: fc.integer({ min: 1, max: 20_000 }),
    shape: fc.constantFrom("array", "object", "params", "batch"),
  })
  .map(({ depth, shape }) => {
    const arrays = "[".repeat(depth) + "]".repeat(depth);
    const objects = '{"a":'.repeat(depth) + "1" + "}".repeat(depth);
    if (shape === "array") return arrays;
    if (shape === "object") return objects;
    const request = `{"jsonrpc":"2.0","id":7,"method":"echo","params":{"text":${arrays}}}`;
    return shape === "params" ? request : `[${request}]`;
  });

/** A payload mutated in ways that keep it one frame: flips, cuts, insertions, odd values. */
const mutatedPayload: fc.Arbitrary<Buffer> = fc.oneof(
  validMessage.map(utf8),
  fc
    .record({ text: validMessage, at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) })
    .map(({ text, at, mask }) => {
      const bytes = utf8(text);
      bytes[at % bytes.length]! ^= mask;
      return bytes;
    }),
  fc.record({ text: validMessage, at: fc.nat() }).map(({ text, at }) => {
    const bytes = utf8(text);
    return bytes.subarray(0, at % bytes.length);
  }),
  fc
    .record({ text: validMessage, at: fc.nat(), junk: fc.uint8Array({ maxLength: 8 }) })
    .map(({ text, at, junk }) => {
      const bytes = utf8(text);
      const cut = at % (bytes.length + 1);
      return Buffer.concat([bytes.subarray(0, cut), junk, bytes.subarray(cut)]);
    }),
  fc.jsonValue({ maxDepth: 4 }).map((v) => utf8(JSON.stringify(v) ?? "null")),
  fc
    .record({
      jsonrpc: fc.constantFrom("2.0", "1.0", 2),
      id: fc.oneof(fc.jsonValue({ maxDepth: 1 }), fc.constant(2 ** 53 + 1)),
      method: fc.oneof(
        fc.constantFrom("echo", "add", "later", "fail", "note", "__proto__", "constructor"),
        fc.constantFrom("toString", "rpc.ping", "rpc.cancel", "rpc.nope", ""),
        fc.jsonValue({ maxDepth: 1 }),
      ),
      params: fc.jsonValue({ maxDepth: 3 }),
      result: fc.jsonValue({ maxDepth: 1 }),
    })
    .map((r) => utf8(JSON.stringify(r))),
  deepPayload.map(utf8),
  fc.uint8Array({ maxLength: 256 }).map((b) => Buffer.from(b)),
);

/**
 * Byte streams with broken framing: headers that lie about the length (short, long, far
 * over the limit), flipped header bytes, cuts mid-frame, foreign protocols, random bytes.
 */
const brokenStream: fc.Arbitrary<Buffer[]> = fc.array(
  fc.oneof(
    mutatedPayload.map((p) => frame(p)),
    fc
      .record({ payload: mutatedPayload, length: fc.oneof(fc.nat(), fc.nat({ max: 300 })) })
      .map(({ payload, length }) => Buffer.concat([header(length), payload])),
    fc
      .record({ payload: mutatedPayload, delta: fc.integer({ min: -8, max: 8 }) })
      .map(({ payload, delta }) =>
        Buffer.concat([header(Math.max(0, payload.length + delta)), payload]),
      ),
    fc
      .record({ payload: mutatedPayload, at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) })
      .map(({ payload, at, mask }) => {
        const bytes = frame(payload);
        bytes[at % 4]! ^= mask;
        return bytes;
      }),
    fc.record({ payload: mutatedPayload, at: fc.nat() }).map(({ payload, at }) => {
      const bytes = frame(payload);
      return bytes.subarray(0, at % bytes.length);
    }),
    fc.constantFrom(
      utf8("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
      utf8("SSH-2.0-OpenSSH_9.6\r\n"),
      Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
    ),
    fc.uint8Array({ minLength: 1, maxLength: 512 }).map((b) => Buffer.from(b)),
  ),
  { minLength: 1, maxLength: 6 },
);

// ---------------------------------------------------------------------------------------

describe.each(KINDS)("fuzzing a real server over %s", (kind) => {
  it("well-framed random and mutated payloads on ONE connection: only JSON-RPC responses come back, the connection stays up, another client keeps getting correct answers", async ({
    cleanups,
  }) => {
    const { server, errors } = await start(cleanups, kind, { maxFrameBytes: 64 * 1024 });
    const { client: good } = await goodClient(cleanups, server);
    const fuzzer = await RawSocket.connect(cleanups, server.address);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(mutatedPayload, { minLength: 1, maxLength: 8 }),
        async (payloads) => {
          run++;
          for (const payload of payloads) await fuzzer.send(payload);
          // A sentinel request: every frame before its answer must be a well-formed response.
          const sentinel = `sentinel-${run}`;
          await fuzzer.send(
            JSON.stringify({
              jsonrpc: "2.0",
              id: sentinel,
              method: "echo",
              params: { text: sentinel },
            }),
          );
          // Bounded: each payload frame is answered by at most one frame; async answers (later)
          // may trail the sentinel and are checked in the next run.
          for (let i = 0; i <= payloads.length * 2 + 1; i++) {
            const raw = await fuzzer.nextRaw();
            expectResponseShape(raw);
            const message = JSON.parse(raw.toString("utf8"));
            if (!Array.isArray(message) && message.id === sentinel) {
              expect(message).toStrictEqual({
                jsonrpc: "2.0",
                id: sentinel,
                result: { text: sentinel },
              });
              break;
            }
            expect(i).toBeLessThan(payloads.length * 2 + 1);
          }
          expect(fuzzer.isClosed).toBe(false);
          // The well-behaved client on the same server is answered correctly.
          expect(await good.call("echo", { text: `good ${run}` })).toStrictEqual({
            text: `good ${run}`,
          });
          expect(await good.call("add", [run, 1])).toBe(run + 1);
        },
      ),
      { numRuns: 50, seed: 0x5ec0 + kind.length },
    );
    for (const raw of fuzzer.drain()) expectResponseShape(raw);
    // Nothing leaked: both connections are the only ones, nothing runs, nothing pends.
    expect(server.connections).toHaveLength(2);
    for (const c of server.connections) expect(c.runningCount).toBe(0);
    expect(good.pendingCount).toBe(0);
    // Only errors about the garbage were reported, never a crash of the server itself.
    for (const error of errors.errors) expect(error).toBeInstanceOf(Error);
  });

  it("broken framing (lying lengths, cut frames, foreign protocols, random bytes): never crashes or hangs, each bad connection is closed or closable, another client is unaffected", async ({
    cleanups,
  }) => {
    const { server } = await start(cleanups, kind, { maxFrameBytes: 4096 });
    const { client: good } = await goodClient(cleanups, server);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(brokenStream, async (chunks) => {
        run++;
        const next = nextConnection(server);
        const fuzzer = await RawSocket.connect(cleanups, server.address);
        const connection = await next;
        const gone = disconnectOf(server, connection);
        for (const chunk of chunks) {
          if (fuzzer.isClosed) break; // the server may drop a peer that speaks HTTP or TLS
          await fuzzer.write(chunk).catch(() => {});
        }
        // EOF: whatever state the bytes left the decoder in, the server closes its side.
        fuzzer.socket.end();
        await fuzzer.closed;
        await gone;
        for (const raw of fuzzer.drain()) expectResponseShape(raw);
        expect(server.connections).toHaveLength(1);
        expect(await good.call("echo", { text: `good ${run}` })).toStrictEqual({
          text: `good ${run}`,
        });
      }),
      { numRuns: 50, seed: 0xb40c + kind.length },
    );
    expect(server.connections).toHaveLength(1);
    expect(server.connections[0]!.runningCount).toBe(0);
    expect(good.pendingCount).toBe(0);
  });
});

describe.each(KINDS)("a client that never reads, over %s", (kind) => {
  it("is dropped once the server buffers maxWriteBufferBytes for it; the buffering stays bounded; another client gets every push", async ({
    cleanups,
  }) => {
    const cap = 1024 * 1024;
    const { server } = await start(cleanups, kind, { maxWriteBufferBytes: cap });
    let next = nextConnection(server);
    const { client: good, ticks } = await goodClient(cleanups, server);
    const goodConnection = await next;

    // The slow client: a plain socket that stops reading at once.
    next = nextConnection(server);
    const slow = await openPaused(cleanups, server.address);
    const slowConnection = await next;
    const dropped = disconnectOf(server, slowConnection);

    const pad = "x".repeat(16 * 1024);
    const frameBytes = (seq: number) =>
      4 +
      Buffer.byteLength(JSON.stringify({ jsonrpc: "2.0", method: "tick", params: { seq, pad } }));
    // Bounded: at most 256 rounds × 8 frames × 16 KiB = 32 MiB per connection, far above the
    // cap plus any kernel socket buffer, so the loop ends by the drop, not by the bound.
    const MAX_ROUNDS = 256;
    let issuedBytes = 0;
    const slowOutcomes: Promise<unknown>[] = [];
    let sentToGood = 0;
    let round = 0;
    for (; round < MAX_ROUNDS && !slowConnection.closed; round++) {
      const goodWrites: Promise<void>[] = [];
      for (let i = 0; i < 8; i++) {
        const seq = round * 8 + i;
        if (!slowConnection.closed) {
          issuedBytes += frameBytes(seq);
          slowOutcomes.push(
            slowConnection.peer.notify("tick", { seq, pad }).then(
              () => "written",
              (error: unknown) => error,
            ),
          );
        }
        goodWrites.push(goodConnection.peer.notify("tick", { seq, pad }));
        sentToGood++;
      }
      // The server honours the good client's backpressure; the slow one's is never relieved.
      await Promise.all(goodWrites);
    }
    expect(round).toBeLessThan(MAX_ROUNDS);

    const error = await dropped;
    expect(error).toBeInstanceOf(ConnectionClosedError);
    expect(error?.message).toMatch(/maxWriteBufferBytes/);
    expect(server.connections).not.toContain(slowConnection);
    // Every push to it settled: written before the socket filled up, or rejected.
    const outcomes = await Promise.all(slowOutcomes);
    const rejected = outcomes.filter((o) => o !== "written");
    expect(rejected.length).toBeGreaterThan(0);
    for (const o of rejected) expect(o).toBeInstanceOf(ConnectionClosedError);
    // Pushes after the drop reject at once.
    await expect(slowConnection.peer.notify("tick", { seq: -1, pad: "" })).rejects.toBeInstanceOf(
      ConnectionClosedError,
    );

    // What the server held for it in its own memory when it dropped it is what was issued
    // minus what the kernel had taken (which the slow client can still read): at most the
    // cap plus the one frame that crossed it. (The transport counts a write the kernel took
    // in part as wholly unsent, so it may drop a little before the cap: never after.)
    slow.resume();
    const delivered = await slow.total;
    const heldByServer = issuedBytes - delivered;
    expect(heldByServer).toBeGreaterThan(0);
    expect(heldByServer).toBeLessThanOrEqual(cap + frameBytes(0) + 16);
    expect(issuedBytes).toBeGreaterThan(cap);

    // The other client got every push, in order, and still calls.
    expect(await good.call("echo", { text: "unaffected" })).toStrictEqual({ text: "unaffected" });
    expect(ticks).toStrictEqual(Array.from({ length: sentToGood }, (_, i) => i));
    expect(server.connections).toStrictEqual([goodConnection]);
  });
});

/** A raw socket that never reads until `resume()`; `total` is every byte it got by 'close'. */
async function openPaused(
  cleanups: Cleanups,
  address: string,
): Promise<{ socket: Socket; resume(): void; total: Promise<number> }> {
  const tcp = /^tcp:\/\/(.+):(\d+)$/.exec(address);
  const socket = tcp
    ? createConnection({ host: tcp[1]!, port: Number(tcp[2]) })
    : createConnection(address.replace(/^unix:/, ""));
  cleanups.add(socket, (s) => s.destroy());
  socket.pause();
  socket.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  const total = new Promise<number>((resolve) => {
    let bytes = 0;
    socket.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
    });
    socket.once("close", () => resolve(bytes));
  });
  // Adding a 'data' listener would start the flow: pause again until the test resumes.
  socket.pause();
  return { socket, resume: () => socket.resume(), total };
}

describe.each(KINDS)("maxConnections over %s", (kind) => {
  it("the excess connection is refused (its first call says too many connections); existing ones keep working", async ({
    cleanups,
  }) => {
    const { server, errors } = await start(cleanups, kind, { maxConnections: 2 });
    const { client: a } = await goodClient(cleanups, server);
    const { client: b } = await goodClient(cleanups, server);
    expect(await a.call("add", [1, 1])).toBe(2);
    expect(await b.call("add", [2, 2])).toBe(4);
    expect(server.connections).toHaveLength(2);
    const baseline = openSockets();

    // The user's way: connect, then call at once (the call is on the wire before the
    // server's refusal arrives).
    const { client: excess } = await goodClient(cleanups, server);
    const error = await excess.call("add", [3, 3]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionClosedError);
    expect((error as Error).message).toMatch(/too many connections/i);
    expect((error as Error).cause).toBeInstanceOf(RpcError);
    expect((error as Error).cause).toMatchObject({ code: ErrorCodes.Overloaded });
    await errors.next((e) => e instanceof Error && /maxConnections \(2\)/.test(e.message));

    expect(server.connections).toHaveLength(2);
    expect(await a.call("echo", { text: "a" })).toStrictEqual({ text: "a" });
    expect(await b.call("echo", { text: "b" })).toStrictEqual({ text: "b" });

    // A freed slot can be taken again.
    const freed = disconnectOf(server, server.connections[0]!);
    await a.close();
    await freed;
    const { client: c } = await goodClient(cleanups, server);
    expect(await c.call("add", [5, 5])).toBe(10);

    // Nothing of the refused connection is left open, on either side (a, gone, was
    // replaced by c).
    await excess.close();
    await vi.waitFor(() => expect(openSockets()).toBe(baseline), { timeout: 1_000 });
  });

  it("with an authKey, the excess client is told there are too many connections (not that its key is wrong)", async ({
    cleanups,
  }) => {
    const key = "limits-key";
    const { server } = await start(cleanups, kind, { maxConnections: 1, authKey: key });
    const { client: a } = await goodClient(cleanups, server, { authKey: key });
    expect(await a.call("add", [1, 1])).toBe(2);
    const error = await connect(contract, server.address, {
      authKey: key,
      handlers: { tick: () => {} },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    // The server sent {"error":{"code":-32003,"message":"Too many connections
    // (maxConnections)"}} and closed; that is the reason the user needs.
    expect((error as Error).message).toMatch(/too many connections/i);
    expect(error).not.toBeInstanceOf(AuthenticationError);
    expect(await a.call("add", [2, 2])).toBe(4);
  });
});

// Over TCP: that is where a remote peer could exhaust the server's file descriptors.
describe("refused connections", () => {
  it("are released even when the peer had sent bytes first: no socket is left open, close() completes", async ({
    cleanups,
  }) => {
    const { server } = await start(cleanups, "tcp", {
      maxUnauthenticated: 1,
      authKey: "k",
      handshakeTimeout: 60_000,
    });
    // One connection stuck in its handshake fills maxUnauthenticated: every further one is
    // refused (-32003) and, having been refused, counts against no limit.
    const stuck = await RawSocket.connect(cleanups, server.address);
    await stuck.nextRaw();
    const baseline = openSockets();
    // Bounded: five refused peers, each sending a frame before reading the refusal.
    for (let i = 0; i < 5; i++) {
      const peer = await RawSocket.connect(cleanups, server.address);
      await peer.send(`{"jsonrpc":"2.0","id":${i},"method":"add","params":[1,2]}`);
      const refusal = await peer.next();
      expect(refusal.error.code).toBe(ErrorCodes.Overloaded);
      await peer.closed;
    }
    // Every refused peer is gone on its side; the server must not hold their sockets.
    await vi.waitFor(() => expect(openSockets()).toBe(baseline), { timeout: 1_000 });
    stuck.socket.destroy();
    await stuck.closed;
    await within(server.close({ timeout: 1_000 }), 3_000, "server.close()");
  });
});

describe("error hygiene (exposeErrors)", () => {
  it("off by default: -32603 'Internal error' with no message or stack; onError gets the original", async ({
    cleanups,
  }) => {
    const { server, errors } = await start(cleanups, "unix", {});
    const { client } = await goodClient(cleanups, server);
    const error = await client.call("fail").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RpcError);
    expect(error).toMatchObject({ code: ErrorCodes.InternalError, message: "Internal error" });
    expect((error as RpcError).data).toBeUndefined();
    expect(JSON.stringify((error as RpcError).toJSON())).not.toMatch(/secret-detail|at \S+:\d+/);
    const original = await errors.next((e) => e instanceof Error && e.message === SECRET);
    expect((original as Error).stack).toContain(SECRET);
  });

  it("on: the caller sees the message and the stack", async ({ cleanups }) => {
    const { server, errors } = await start(cleanups, "unix", { exposeErrors: true });
    const { client } = await goodClient(cleanups, server);
    const error = await client.call("fail").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RpcError);
    expect(error).toMatchObject({
      code: ErrorCodes.InternalError,
      data: { name: "Error", message: SECRET },
    });
    expect((error as RpcError & { data: { stack: string } }).data.stack).toContain(SECRET);
    await errors.next((e) => e instanceof Error && e.message === SECRET);
  });
});
