// Bad input over a real socket: each case gets its documented error (peer.ts is the source
// of truth) or a clean close, the server keeps serving, and nothing is left behind.
import {
  connect,
  createServer,
  defineContract,
  ErrorCodes,
  type ErrorReport,
  method,
  notification,
  ProtocolError,
  RpcError,
  type Server,
  type ServerOptions,
  ValidationError,
} from "ezipc";
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import { z } from "zod";
import {
  frame,
  type Gate,
  gate,
  header,
  type ListenPlace,
  listenPlace,
  RawClient,
  type SocketKind,
} from "./helpers/raw-socket.js";

type Tree = number | Tree[];
// A recursive schema: zod recurses into it and throws RangeError on deep enough input.
const Tree: z.ZodType<Tree> = z.lazy(() => z.union([z.number(), z.array(Tree)]));

const contract = defineContract({
  server: {
    echo: method({
      params: z.object({ text: z.string() }),
      result: z.object({ text: z.string() }),
    }),
    deep: method({ params: z.object({ tree: Tree }), result: z.number() }),
    deepNote: notification({ params: z.object({ tree: Tree }) }),
    fail: method({ result: z.string() }),
    refuse: method({ result: z.string() }),
    badResult: method({ result: z.object({ n: z.number() }) }),
    wait: method({ params: z.object({ n: z.number() }), result: z.number() }),
    note: notification({ params: z.object({ text: z.string() }) }),
  },
});

const SECRET = "secret-detail-of-the-handler-7f3a";

/** The depth of a tree of arrays, computed without recursion. */
function depthOf(tree: Tree): number {
  let depth = 0;
  let node: Tree = tree;
  // Bounded by the input's own nesting.
  while (Array.isArray(node)) {
    depth++;
    node = node[0] ?? 0;
  }
  return depth;
}

/** `depth` arrays nested in one another around a 1: `[[[1]]]` for 3. */
function nestedText(depth: number): string {
  return "[".repeat(depth) + "1" + "]".repeat(depth);
}

interface Harness {
  server: Server;
  errors: { error: unknown; report: ErrorReport }[];
  disconnects: (Error | undefined)[];
  calls: { method: string; params: unknown }[];
  started: number;
  gate: Gate;
}

describe.each<SocketKind>(["unix", "tcp"])("bad input over %s", (kind) => {
  let place: ListenPlace | undefined;
  let h: Harness | undefined;
  let clients: RawClient[] = [];

  /** Starts a server with the test contract and `options` (onError is collected). */
  async function start(options: ServerOptions = {}): Promise<Harness> {
    place = listenPlace(kind);
    const harness: Harness = {
      server: undefined as unknown as Server,
      errors: [],
      disconnects: [],
      calls: [],
      started: 0,
      gate: gate(),
    };
    const record = (method: string, params: unknown) => harness.calls.push({ method, params });
    harness.server = createServer(
      contract,
      {
        echo: (params) => {
          record("echo", params);
          return { text: params.text };
        },
        deep: (params) => {
          record("deep", undefined);
          return depthOf(params.tree);
        },
        deepNote: () => {
          record("deepNote", undefined);
        },
        fail: () => {
          record("fail", undefined);
          throw new Error(SECRET);
        },
        refuse: () => {
          record("refuse", undefined);
          throw new RpcError(-32050, "not your file", { filename: "a.txt" });
        },
        badResult: () => {
          record("badResult", undefined);
          return { n: "not a number" } as unknown as { n: number };
        },
        wait: async (params) => {
          record("wait", params);
          harness.started++;
          await harness.gate.promise;
          return params.n;
        },
        note: (params) => {
          record("note", params);
        },
      },
      { ...options, onError: (error, report) => harness.errors.push({ error, report }) },
    );
    harness.server.on("disconnect", (_connection, error) => harness.disconnects.push(error));
    await harness.server.listen(place.address);
    h = harness;
    return harness;
  }

  /** Opens a raw client, registered for cleanup; waits until the server holds it. */
  async function open(opts: { registered?: boolean } = {}): Promise<RawClient> {
    const before = h!.server.connections.length;
    const client = await RawClient.connect(h!.server.address);
    clients.push(client);
    if (opts.registered !== false) {
      await vi.waitFor(() => expect(h!.server.connections.length).toBe(before + 1));
    }
    return client;
  }

  let aliveCounter = 0;
  /** Proves `client`'s connection still answers a well-formed call correctly. */
  async function expectAnswers(client: RawClient): Promise<void> {
    const id = `alive-${++aliveCounter}`;
    const text = `hello ${id}`;
    expect(
      await client.request(
        JSON.stringify({ jsonrpc: "2.0", method: "echo", params: { text }, id }),
      ),
    ).toStrictEqual({ jsonrpc: "2.0", id, result: { text } });
  }

  afterEach(async () => {
    const harness = h;
    const opened = clients;
    clients = [];
    h = undefined;
    try {
      if (harness === undefined) return;
      harness.gate.resolve();
      // Nothing of the test may still be running on the server.
      for (const c of harness.server.connections) expect(c.runningCount).toBe(0);
      await Promise.all(opened.map((c) => c.destroy()));
      await vi.waitFor(() => expect(harness.server.connections).toHaveLength(0));
      // The same server still serves a fresh, well-behaved client (ezipc's own).
      const fresh = await connect(contract, harness.server.address);
      try {
        expect(await fresh.call("echo", { text: "fresh" })).toStrictEqual({ text: "fresh" });
        expect(fresh.pendingCount).toBe(0);
      } finally {
        await fresh.close();
      }
      await vi.waitFor(() => expect(harness.server.connections).toHaveLength(0));
    } finally {
      await Promise.all(opened.map((c) => c.destroy()));
      await harness?.server.close();
      place?.cleanup();
      place = undefined;
    }
  });

  describe("garbage on the wire", () => {
    it("random bytes then EOF: the server closes the connection cleanly (fixed seed)", async () => {
      const { server } = await start();
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 4096 }), async (bytes) => {
          const client = await open();
          await client.write(bytes);
          client.socket.end();
          // Whatever state the random bytes left the decoder in, EOF closes the connection.
          await client.closed;
          await vi.waitFor(() => expect(server.connections).toHaveLength(0));
        }),
        { seed: 0x5eed, numRuns: 40 },
      );
      // Random bytes never reached a handler.
      expect(h!.calls).toStrictEqual([]);
    });

    it("random well-framed payloads: every answer is a JSON-RPC response, and the same connection still answers (fixed seed)", async () => {
      await start({ maxFrameBytes: 4096 });
      const anyId = fc.oneof(fc.integer(), fc.string({ maxLength: 8 }), fc.constant(null));
      const method = fc.constantFrom("echo", "deep", "fail", "refuse", "badResult", "note", "nope");
      const request = fc.record(
        {
          jsonrpc: fc.constantFrom("2.0", "1.0"),
          method: fc.oneof(method, fc.jsonValue({ maxDepth: 2 })),
          params: fc.jsonValue({ maxDepth: 3 }),
          id: anyId,
        },
        { requiredKeys: [] },
      );
      const payload = fc.oneof(
        fc.uint8Array({ maxLength: 64 }),
        fc.string({ maxLength: 64 }).map((s) => new TextEncoder().encode(s)),
        fc.jsonValue({ maxDepth: 4 }).map((v) => new TextEncoder().encode(JSON.stringify(v))),
        request.map((r) => new TextEncoder().encode(JSON.stringify(r))),
        fc
          .array(request, { minLength: 1, maxLength: 4 })
          .map((b) => new TextEncoder().encode(JSON.stringify(b))),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(payload, { minLength: 1, maxLength: 8 }), async (payloads) => {
          const client = await open();
          for (const p of payloads) await client.send(p);
          const id = `alive-${++aliveCounter}`;
          await client.send(
            JSON.stringify({ jsonrpc: "2.0", method: "echo", params: { text: id }, id }),
          );
          // Every frame gets at most one answer frame: the echo's answer arrives within
          // payloads.length + 1 frames, and every frame before it is a JSON-RPC response.
          let answer: any;
          for (let i = 0; i <= payloads.length; i++) {
            const message = await client.next();
            const responses = Array.isArray(message) ? message : [message];
            for (const r of responses) {
              expect(r.jsonrpc).toBe("2.0");
              expect("result" in r !== "error" in r).toBe(true);
              if ("error" in r) expect(Number.isInteger(r.error.code)).toBe(true);
            }
            if (!Array.isArray(message) && message.id === id) {
              answer = message;
              break;
            }
          }
          expect(answer).toStrictEqual({ jsonrpc: "2.0", id, result: { text: id } });
          await client.destroy();
        }),
        { seed: 0xb1d, numRuns: 40 },
      );
    });

    it.each([
      ["a truncated body", Buffer.concat([header(100), Buffer.from('{"jsonrpc":"2.0",')])],
      ["a truncated header", Buffer.from([0x00, 0x00])],
    ])("%s then EOF: closed cleanly, nothing answered, no handler run", async (_name, bytes) => {
      const { server } = await start();
      const client = await open();
      await client.write(bytes);
      client.socket.end();
      await client.closed;
      expect(client.unread).toBe(0);
      await vi.waitFor(() => expect(server.connections).toHaveLength(0));
      expect(h!.calls).toStrictEqual([]);
    });

    it("a valid frame written one byte per write is answered", async () => {
      await start();
      const client = await open();
      const text = JSON.stringify({
        jsonrpc: "2.0",
        method: "echo",
        params: { text: "é✓" },
        id: 1,
      });
      const bytes = frame(text);
      for (let i = 0; i < bytes.length; i++) await client.write(bytes.subarray(i, i + 1));
      expect(await client.next()).toStrictEqual({ jsonrpc: "2.0", id: 1, result: { text: "é✓" } });
    });

    it("a zero-length frame → -32700 (id null), and the connection keeps working", async () => {
      await start();
      const client = await open();
      const response = await client.request("");
      expect(response).toMatchObject({ jsonrpc: "2.0", id: null });
      expect(response.error.code).toBe(ErrorCodes.ParseError);
      await expectAnswers(client);
    });

    it.each([
      ["a lone continuation byte", [0x80], 0],
      ["0xff", [0xff], 0],
      ["an overlong '/'", [0xc0, 0xaf], 0],
      ["a UTF-16 surrogate", [0xed, 0xa0, 0x80], 0],
      ["a truncated 3-byte sequence", [0xe2, 0x82], 0],
      // Large frames take the transport's ASCII fast path first: bad bytes must still fail.
      ["0xff in a 64 KiB frame", [0xff], 65_536],
      ["a UTF-16 surrogate in a 64 KiB frame", [0xed, 0xa0, 0x80], 65_536],
      // Past Node's external-string size the transport decodes as UTF-8 again.
      ["0xff in a 1.1 MB frame", [0xff], 1_100_000],
    ])(
      "invalid UTF-8 (%s) inside a JSON string → -32700, and the connection keeps working",
      async (_name, bad, padding) => {
        await start();
        const client = await open();
        // Valid JSON but for the bad bytes: a lenient decoder would turn them into U+FFFD
        // and run the call.
        const payload = Buffer.concat([
          Buffer.from(`{"jsonrpc":"2.0","method":"echo","params":{"text":"${"x".repeat(padding)}`),
          Buffer.from(bad),
          Buffer.from('"},"id":1}'),
        ]);
        const response = await client.request(payload);
        expect(response).toMatchObject({ jsonrpc: "2.0", id: null });
        expect(response.error.code).toBe(ErrorCodes.ParseError);
        expect(h!.calls).toStrictEqual([]);
        await expectAnswers(client);
      },
    );

    it.each([
      ["ASCII", "a".repeat(100_000)],
      ["multi-byte", "é€😀".repeat(20_000)],
      ["ASCII with one U+FFFD", `${"a".repeat(50_000)}\uFFFD${"b".repeat(50_000)}`],
      ["ASCII past Node's external-string size (1.1 MB)", "a".repeat(1_100_000)],
      ["multi-byte past 1.1 MB", "aé".repeat(400_000)],
    ])("a large frame of %s text arrives exactly as sent", async (_name, text) => {
      await start();
      const client = await open();
      const response = await client.request(
        JSON.stringify({ jsonrpc: "2.0", method: "echo", params: { text }, id: 1 }),
      );
      expect(response).toStrictEqual({ jsonrpc: "2.0", id: 1, result: { text } });
    });

    it.each([
      ["plain text", "hello"],
      ["a truncated object", '{"jsonrpc":"2.0","method":"echo"'],
      ["a trailing comma", '{"jsonrpc":"2.0","method":"echo","id":1,}'],
      ["two values", '{"jsonrpc":"2.0"} {"jsonrpc":"2.0"}'],
      ["NaN", "NaN"],
    ])(
      "non-JSON (%s) → -32700 (id null), and the connection keeps working",
      async (_name, text) => {
        await start();
        const client = await open();
        const response = await client.request(text);
        expect(response).toMatchObject({ jsonrpc: "2.0", id: null });
        expect(response.error.code).toBe(ErrorCodes.ParseError);
        await expectAnswers(client);
      },
    );
  });

  describe("frame limits", () => {
    it("a length header over maxFrameBytes → FrameTooLarge (id null); the streamed body is discarded and the connection keeps working", async () => {
      await start({ maxFrameBytes: 1024 });
      const client = await open();
      // The oversize body begins with what would be a valid frame: it must be discarded,
      // not interpreted.
      const smuggled = JSON.stringify({
        jsonrpc: "2.0",
        method: "echo",
        params: { text: "smuggled" },
        id: "smuggled",
      });
      const body = Buffer.alloc(5000, 0x20);
      body.writeUInt32BE(Buffer.byteLength(smuggled), 0);
      body.write(smuggled, 4);
      await client.write(header(body.length));
      // Stream the body in pieces, as a real sender would.
      for (let at = 0; at < body.length; at += 700) {
        await client.write(body.subarray(at, Math.min(at + 700, body.length)));
      }
      const response = await client.next();
      expect(response).toMatchObject({ jsonrpc: "2.0", id: null });
      expect(response.error.code).toBe(ErrorCodes.FrameTooLarge);
      await expectAnswers(client);
      expect(h!.calls.map((c) => c.method)).toStrictEqual(["echo"]);
      expect(h!.calls[0]!.params).not.toStrictEqual({ text: "smuggled" });
    });

    it("a frame of exactly maxFrameBytes is accepted", async () => {
      await start({ maxFrameBytes: 1024 });
      const client = await open();
      const base = JSON.stringify({ jsonrpc: "2.0", method: "echo", params: { text: "" }, id: 1 });
      const text = "x".repeat(1024 - Buffer.byteLength(base));
      const payload = JSON.stringify({ jsonrpc: "2.0", method: "echo", params: { text }, id: 1 });
      expect(Buffer.byteLength(payload)).toBe(1024);
      expect(await client.request(payload)).toStrictEqual({
        jsonrpc: "2.0",
        id: 1,
        result: { text },
      });
    });

    it('a header that reads "GET " (HTTP): connection closed, onError gets a ProtocolError saying the peer is not speaking ezipc', async () => {
      const { server } = await start();
      const client = await open();
      await client.write("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
      await client.closed;
      await vi.waitFor(() => expect(server.connections).toHaveLength(0));
      const protocolErrors = h!.errors.filter((e) => e.error instanceof ProtocolError);
      expect(protocolErrors).toHaveLength(1);
      expect((protocolErrors[0]!.error as Error).message).toMatch(/not speaking ezipc/);
      expect((protocolErrors[0]!.error as Error).message).toMatch(/HTTP/);
      expect(h!.calls).toStrictEqual([]);
    });

    it("a TLS ClientHello header (0x16 0x03 …): connection closed, onError gets a ProtocolError", async () => {
      const { server } = await start();
      const client = await open();
      const hello = Buffer.from([
        0x16,
        0x03,
        0x01,
        0x02,
        0x00,
        0x01,
        0x00,
        0x01,
        0xfc,
        0x03,
        0x03,
        ...new Array(32).fill(7),
      ]);
      await client.write(hello);
      await client.closed;
      await vi.waitFor(() => expect(server.connections).toHaveLength(0));
      const protocolErrors = h!.errors.filter((e) => e.error instanceof ProtocolError);
      expect(protocolErrors).toHaveLength(1);
      expect((protocolErrors[0]!.error as Error).message).toMatch(/not speaking ezipc/);
      expect((protocolErrors[0]!.error as Error).message).toMatch(/TLS/);
    });

    it("a frame that starts but never completes: the server closes the connection after frameTimeout", async () => {
      const { server } = await start({ frameTimeout: 200 });
      const client = await open();
      await client.write(Buffer.concat([header(100), Buffer.from('{"jsonrpc":')]));
      // No EOF from us: only the server's deadline can close this connection.
      await client.closed;
      await vi.waitFor(() => expect(server.connections).toHaveLength(0));
      expect(h!.disconnects).toHaveLength(1);
      expect(h!.disconnects[0]).toBeInstanceOf(ProtocolError);
      expect(client.unread).toBe(0);
    });

    it("bytes trickling into a started frame do not extend its deadline (slowloris)", async () => {
      const { server } = await start({ frameTimeout: 100 });
      const client = await open();
      // The frame would need 300,000 one-byte writes, each a turn of the event loop, to
      // complete (seconds at least); the deadline counts from the frame's first byte, so the
      // server closes the connection long before.
      const size = 300_000;
      await client.write(header(size));
      const one = Buffer.from(" ");
      let sent = 0;
      while (sent < size && !client.isClosed) {
        try {
          await client.write(one);
        } catch {
          break; // the server reset the connection under us
        }
        sent++;
        // Yield to I/O and timers: a write callback can come back without a turn of the
        // event loop, which would starve the server living in this same process.
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      await client.closed;
      expect(sent).toBeLessThan(size);
      await vi.waitFor(() => expect(server.connections).toHaveLength(0));
      expect(h!.disconnects[0]).toBeInstanceOf(ProtocolError);
    });
  });

  describe("deep nesting", () => {
    it("10,000-deep params → TooDeep with the request's id; the connection keeps working", async () => {
      await start();
      const client = await open();
      const response = await client.request(
        `{"jsonrpc":"2.0","method":"deep","params":{"tree":${nestedText(10_000)}},"id":7}`,
      );
      expect(response).toMatchObject({ jsonrpc: "2.0", id: 7 });
      expect(response.error.code).toBe(ErrorCodes.TooDeep);
      expect(h!.calls).toStrictEqual([]);
      // A legal tree still reaches the recursive schema and the handler.
      expect(
        await client.request(
          `{"jsonrpc":"2.0","method":"deep","params":{"tree":${nestedText(5)}},"id":8}`,
        ),
      ).toStrictEqual({ jsonrpc: "2.0", id: 8, result: 5 });
      await expectAnswers(client);
    });

    it("10,000-deep JSON in a batch entry → TooDeep; in a notification → no answer", async () => {
      await start();
      const client = await open();
      const response = await client.request(
        `[{"jsonrpc":"2.0","method":"deep","params":{"tree":${nestedText(10_000)}},"id":9}]`,
      );
      const first = Array.isArray(response) ? response[0] : response;
      expect(first.error.code).toBe(ErrorCodes.TooDeep);
      await client.send(
        `{"jsonrpc":"2.0","method":"deepNote","params":{"tree":${nestedText(10_000)}}}`,
      );
      await expectAnswers(client);
      expect(h!.calls.map((c) => c.method)).toStrictEqual(["echo"]);
    });

    // With the depth bound raised past the input, the 10,000-deep value reaches the depth
    // check and the recursive z.lazy schema in full: neither may throw out of the server
    // (an uncaught RangeError would kill the process). zod's RangeError is documented to
    // become -32602 (contract/validate.ts); a hard cap answering TooDeep is also a clean
    // answer. The short test timeout only bounds how long a hung answer is waited for.
    it("with maxDepth raised past the input, 10,000-deep params get an error answer, not a crash", {
      timeout: 5_000,
    }, async () => {
      await start({ maxDepth: 1_000_000 });
      const client = await open();
      const response = await client.request(
        `{"jsonrpc":"2.0","method":"deep","params":{"tree":${nestedText(10_000)}},"id":10}`,
      );
      expect(response).toMatchObject({ jsonrpc: "2.0", id: 10 });
      expect([ErrorCodes.InvalidParams, ErrorCodes.TooDeep]).toContain(response.error.code);
      expect(h!.calls).toStrictEqual([]);
      await expectAnswers(client);
    });
  });

  describe("dispatch", () => {
    it.each([
      "__proto__",
      "constructor",
      "toString",
      "hasOwnProperty",
      "valueOf",
      "__defineGetter__",
    ])(
      "method name %s → -32601 with the request's id; as a notification → no answer",
      async (name) => {
        await start();
        const client = await open();
        const response = await client.request(
          JSON.stringify({ jsonrpc: "2.0", method: name, params: {}, id: "m" }),
        );
        expect(response).toMatchObject({ jsonrpc: "2.0", id: "m" });
        expect(response.error.code).toBe(ErrorCodes.MethodNotFound);
        await client.send(JSON.stringify({ jsonrpc: "2.0", method: name, params: {} }));
        await expectAnswers(client);
        expect(h!.calls.map((c) => c.method)).toStrictEqual(["echo"]);
      },
    );

    it.each([
      ["2**53+1", "9007199254740993"],
      ["-(2**53+1)", "-9007199254740993"],
      ["a fraction", "1.5"],
      ["a boolean", "true"],
      ["an object", '{"n":1}'],
      ["an array", "[1]"],
    ])("an id of %s → -32600 with id null, and the handler does not run", async (_name, idText) => {
      await start();
      const client = await open();
      const response = await client.request(
        `{"jsonrpc":"2.0","method":"echo","params":{"text":"x"},"id":${idText}}`,
      );
      expect(response).toMatchObject({ jsonrpc: "2.0", id: null });
      expect(response.error.code).toBe(ErrorCodes.InvalidRequest);
      expect(h!.calls).toStrictEqual([]);
      await expectAnswers(client);
    });

    it("the largest safe integer id (2**53-1) is accepted and echoed exactly", async () => {
      await start();
      const client = await open();
      const response = await client.request(
        `{"jsonrpc":"2.0","method":"echo","params":{"text":"x"},"id":9007199254740991}`,
      );
      expect(response).toStrictEqual({ jsonrpc: "2.0", id: 2 ** 53 - 1, result: { text: "x" } });
    });

    it.each([
      ["a wrong type", '{"text":5}', ["text"]],
      ["a missing key", "{}", ["text"]],
      ["positional params for a by-name schema", '["x"]', []],
    ])(
      "params failing the schema (%s) → -32602 with zod's issues in error.data",
      async (_name, params, path) => {
        await start();
        const client = await open();
        const response = await client.request(
          `{"jsonrpc":"2.0","method":"echo","params":${params},"id":"p"}`,
        );
        expect(response).toMatchObject({ jsonrpc: "2.0", id: "p" });
        expect(response.error.code).toBe(ErrorCodes.InvalidParams);
        const issues = response.error.data;
        expect(Array.isArray(issues)).toBe(true);
        expect(issues.length).toBeGreaterThan(0);
        for (const issue of issues) {
          expect(Array.isArray(issue.path)).toBe(true);
          expect(typeof issue.message).toBe("string");
        }
        expect(issues[0].path).toStrictEqual(path);
        expect(h!.calls).toStrictEqual([]);
        await expectAnswers(client);
      },
    );

    it("params given to a method that takes none → -32602", async () => {
      await start();
      const client = await open();
      const response = await client.request(
        `{"jsonrpc":"2.0","method":"fail","params":{"x":1},"id":"n"}`,
      );
      expect(response.error.code).toBe(ErrorCodes.InvalidParams);
      expect(h!.calls).toStrictEqual([]);
    });

    it("a handler throwing a plain Error → -32603 Internal error with no message or stack; onError gets the original", async () => {
      await start();
      const client = await open();
      await client.send(`{"jsonrpc":"2.0","method":"fail","id":"f"}`);
      const raw = (await client.nextRaw()).toString("utf8");
      expect(raw).not.toContain(SECRET);
      expect(raw).not.toMatch(/\bat\s/);
      expect(JSON.parse(raw)).toStrictEqual({
        jsonrpc: "2.0",
        id: "f",
        error: { code: ErrorCodes.InternalError, message: "Internal error" },
      });
      const handlerErrors = h!.errors.filter((e) => e.report.phase === "handler");
      expect(handlerErrors).toHaveLength(1);
      expect(handlerErrors[0]!.error).toBeInstanceOf(Error);
      expect((handlerErrors[0]!.error as Error).message).toBe(SECRET);
      expect(handlerErrors[0]!.report).toMatchObject({ method: "fail", id: "f" });
      await expectAnswers(client);
    });

    it("a handler throwing RpcError → exactly its code, message and data", async () => {
      await start();
      const client = await open();
      expect(await client.request(`{"jsonrpc":"2.0","method":"refuse","id":"r"}`)).toStrictEqual({
        jsonrpc: "2.0",
        id: "r",
        error: { code: -32050, message: "not your file", data: { filename: "a.txt" } },
      });
      await expectAnswers(client);
    });

    it("a handler returning a result that fails the result schema → -32603; onError gets a ValidationError", async () => {
      await start();
      const client = await open();
      const response = await client.request(`{"jsonrpc":"2.0","method":"badResult","id":"b"}`);
      expect(response).toStrictEqual({
        jsonrpc: "2.0",
        id: "b",
        error: { code: ErrorCodes.InternalError, message: "Internal error" },
      });
      const resultErrors = h!.errors.filter((e) => e.error instanceof ValidationError);
      expect(resultErrors).toHaveLength(1);
      expect(resultErrors[0]!.report).toMatchObject({ phase: "result", method: "badResult" });
      await expectAnswers(client);
    });

    it("__proto__ and constructor keys in params pollute nothing", async () => {
      await start();
      const client = await open();
      const response = await client.request(
        `{"jsonrpc":"2.0","method":"echo","params":{"text":"x","__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}}},"id":"pp"}`,
      );
      expect(response).toStrictEqual({ jsonrpc: "2.0", id: "pp", result: { text: "x" } });
      expect(h!.calls[0]!.params).toStrictEqual({ text: "x" });
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      expect(Object.getPrototypeOf(h!.calls[0]!.params)).toBe(Object.prototype);
    });
  });

  describe("limits", () => {
    it("a batch larger than maxBatchSize → BatchTooLarge, and no entry runs", async () => {
      await start({ maxBatchSize: 4 });
      const client = await open();
      const entry = (i: number) => ({
        jsonrpc: "2.0",
        method: "echo",
        params: { text: `${i}` },
        id: i,
      });
      const response = await client.request(JSON.stringify([0, 1, 2, 3, 4].map(entry)));
      const error = Array.isArray(response) ? response[0] : response;
      expect(error.id).toBeNull();
      expect(error.error.code).toBe(ErrorCodes.BatchTooLarge);
      expect(h!.calls).toStrictEqual([]);
      // A batch of exactly maxBatchSize is served.
      const ok = await client.request(JSON.stringify([0, 1, 2, 3].map(entry)));
      expect(ok).toHaveLength(4);
      await expectAnswers(client);
    });

    it("more than maxConnections: the excess gets an Overloaded frame then a close; existing connections keep working", async () => {
      const { server } = await start({ maxConnections: 2 });
      const a = await open();
      const b = await open();
      const excess = await open({ registered: false });
      const refusal = await excess.next();
      expect(refusal).toMatchObject({ jsonrpc: "2.0", id: null });
      expect(refusal.error.code).toBe(ErrorCodes.Overloaded);
      await excess.closed;
      expect(server.connections).toHaveLength(2);
      await expectAnswers(a);
      await expectAnswers(b);
      // A freed slot can be taken again.
      await a.destroy();
      await vi.waitFor(() => expect(server.connections).toHaveLength(1));
      const c = await open();
      await expectAnswers(c);
    });

    it("maxInFlight exceeded: the excess call gets Overloaded; the running calls finish; the connection keeps working", async () => {
      const harness = await start({ maxInFlight: 2 });
      const client = await open();
      await client.send(`{"jsonrpc":"2.0","method":"wait","params":{"n":1},"id":1}`);
      await client.send(`{"jsonrpc":"2.0","method":"wait","params":{"n":2},"id":2}`);
      await vi.waitFor(() => expect(harness.started).toBe(2));
      expect(harness.server.connections[0]!.runningCount).toBe(2);
      const refused = await client.request(
        `{"jsonrpc":"2.0","method":"wait","params":{"n":3},"id":3}`,
      );
      expect(refused).toMatchObject({ jsonrpc: "2.0", id: 3 });
      expect(refused.error.code).toBe(ErrorCodes.Overloaded);
      expect(harness.started).toBe(2);
      harness.gate.resolve();
      const done = [await client.next(), await client.next()];
      expect(done.sort((x, y) => x.id - y.id)).toStrictEqual([
        { jsonrpc: "2.0", id: 1, result: 1 },
        { jsonrpc: "2.0", id: 2, result: 2 },
      ]);
      await vi.waitFor(() => expect(harness.server.connections[0]!.runningCount).toBe(0));
      await expectAnswers(client);
    });

    it("a request reusing the id of a call still running → -32600 with that id; the running call is unaffected", async () => {
      const harness = await start();
      const client = await open();
      await client.send(`{"jsonrpc":"2.0","method":"wait","params":{"n":1},"id":"dup"}`);
      await vi.waitFor(() => expect(harness.started).toBe(1));
      const refused = await client.request(
        `{"jsonrpc":"2.0","method":"wait","params":{"n":2},"id":"dup"}`,
      );
      expect(refused).toMatchObject({ jsonrpc: "2.0", id: "dup" });
      expect(refused.error.code).toBe(ErrorCodes.InvalidRequest);
      expect(harness.started).toBe(1);
      harness.gate.resolve();
      expect(await client.next()).toStrictEqual({ jsonrpc: "2.0", id: "dup", result: 1 });
      await expectAnswers(client);
    });
  });
});
