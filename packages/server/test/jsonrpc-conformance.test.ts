// Every example of section 7 of the JSON-RPC 2.0 specification
// (https://www.jsonrpc.org/specification#examples), sent as the spec's exact JSON text in
// raw length-prefixed frames over a real socket — not through ezipc's client — and
// compared with the spec's exact responses.
import { createServer, defineContract, method, notification, type Server } from "ezipc";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { z } from "zod";
import { type ListenPlace, listenPlace, RawClient, type SocketKind } from "./helpers/raw-socket.js";

const contract = defineContract({
  server: {
    subtract: method({
      params: z.union([
        z.tuple([z.number(), z.number()]),
        z.object({ minuend: z.number(), subtrahend: z.number() }),
      ]),
      result: z.number(),
    }),
    sum: method({ params: z.array(z.number()), result: z.number() }),
    get_data: method({ result: z.tuple([z.string(), z.number()]) }),
    update: notification({ params: z.array(z.number()) }),
    notify_hello: notification({ params: z.array(z.number()) }),
    notify_sum: notification({ params: z.array(z.number()) }),
  },
});

/** A response's sort key, so that batch responses can be compared in any order. */
function byIdThenCode(a: any, b: any): number {
  const key = (r: any) => JSON.stringify([r.id ?? null, r.error?.code ?? 0, r.result ?? null]);
  return key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;
}

function expectSameBatch(actual: unknown, expected: unknown[]): void {
  expect(Array.isArray(actual)).toBe(true);
  expect([...(actual as unknown[])].sort(byIdThenCode)).toStrictEqual(
    [...expected].sort(byIdThenCode),
  );
}

// A follow-up request on the same connection: if the server had answered the frames
// before it, their answer would be the next frame instead of this one's.
const FOLLOW_UP = `{"jsonrpc": "2.0", "method": "subtract", "params": [1, 1], "id": "follow-up"}`;
const FOLLOW_UP_RESPONSE = { jsonrpc: "2.0", result: 0, id: "follow-up" };

describe.each<SocketKind>(["unix", "tcp"])("JSON-RPC 2.0 spec examples over %s", (kind) => {
  let place: ListenPlace;
  let server: Server;
  let client: RawClient;
  let notified: { method: string; params: number[] }[];
  let errors: unknown[];

  beforeEach(async () => {
    notified = [];
    errors = [];
    place = listenPlace(kind);
    server = createServer(
      contract,
      {
        subtract: (params) =>
          Array.isArray(params) ? params[0] - params[1] : params.minuend - params.subtrahend,
        sum: (params) => params.reduce((a, b) => a + b, 0),
        get_data: () => ["hello", 5],
        update: (params) => {
          notified.push({ method: "update", params });
        },
        notify_hello: (params) => {
          notified.push({ method: "notify_hello", params });
        },
        notify_sum: (params) => {
          notified.push({ method: "notify_sum", params });
        },
      },
      { onError: (error) => errors.push(error) },
    );
    await server.listen(place.address);
    client = await RawClient.connect(server.address);
    await vi.waitFor(() => expect(server.connections).toHaveLength(1));
  });

  afterEach(async () => {
    try {
      // Nothing of the test may still be running or waiting to be read.
      for (const c of server.connections) expect(c.runningCount).toBe(0);
      expect(client.unread).toBe(0);
      await client.destroy();
      await vi.waitFor(() => expect(server.connections).toHaveLength(0));
    } finally {
      await server.close();
      place.cleanup();
    }
  });

  it("rpc call with positional parameters: subtract [42, 23] → 19", async () => {
    expect(
      await client.request(`{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}`),
    ).toStrictEqual({ jsonrpc: "2.0", result: 19, id: 1 });
  });

  it("rpc call with positional parameters: subtract [23, 42] → -19", async () => {
    expect(
      await client.request(`{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}`),
    ).toStrictEqual({ jsonrpc: "2.0", result: -19, id: 2 });
  });

  it("rpc call with named parameters: {subtrahend, minuend} → 19", async () => {
    expect(
      await client.request(
        `{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}`,
      ),
    ).toStrictEqual({ jsonrpc: "2.0", result: 19, id: 3 });
  });

  it("rpc call with named parameters: {minuend, subtrahend} → 19", async () => {
    expect(
      await client.request(
        `{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}`,
      ),
    ).toStrictEqual({ jsonrpc: "2.0", result: 19, id: 4 });
  });

  it("a notification (update [1,2,3,4,5]) is handled and nothing is sent back", async () => {
    await client.send(`{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}`);
    expect(await client.request(FOLLOW_UP)).toStrictEqual(FOLLOW_UP_RESPONSE);
    expect(notified).toStrictEqual([{ method: "update", params: [1, 2, 3, 4, 5] }]);
  });

  it("a notification of a non-existent method (foobar) gets nothing back", async () => {
    await client.send(`{"jsonrpc": "2.0", "method": "foobar"}`);
    expect(await client.request(FOLLOW_UP)).toStrictEqual(FOLLOW_UP_RESPONSE);
    expect(notified).toStrictEqual([]);
  });

  it("rpc call of non-existent method → -32601 Method not found", async () => {
    expect(await client.request(`{"jsonrpc": "2.0", "method": "foobar", "id": "1"}`)).toStrictEqual(
      { jsonrpc: "2.0", error: { code: -32601, message: "Method not found" }, id: "1" },
    );
  });

  it("rpc call with invalid JSON → -32700 Parse error, id null", async () => {
    expect(
      await client.request(`{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]`),
    ).toStrictEqual({ jsonrpc: "2.0", error: { code: -32700, message: "Parse error" }, id: null });
    // The connection lives on after a parse error.
    expect(await client.request(FOLLOW_UP)).toStrictEqual(FOLLOW_UP_RESPONSE);
  });

  it("rpc call with invalid Request object → -32600 Invalid Request, id null", async () => {
    expect(await client.request(`{"jsonrpc": "2.0", "method": 1, "params": "bar"}`)).toStrictEqual({
      jsonrpc: "2.0",
      error: { code: -32600, message: "Invalid Request" },
      id: null,
    });
  });

  it("rpc call Batch, invalid JSON → a single -32700 Parse error", async () => {
    expect(
      await client.request(`[
  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
  {"jsonrpc": "2.0", "method"
]`),
    ).toStrictEqual({ jsonrpc: "2.0", error: { code: -32700, message: "Parse error" }, id: null });
  });

  it("rpc call with an empty Array → a single -32600 Invalid Request (not an array)", async () => {
    expect(await client.request(`[]`)).toStrictEqual({
      jsonrpc: "2.0",
      error: { code: -32600, message: "Invalid Request" },
      id: null,
    });
  });

  it("rpc call with an invalid Batch (but not empty): [1] → an array of one -32600", async () => {
    expect(await client.request(`[1]`)).toStrictEqual([
      { jsonrpc: "2.0", error: { code: -32600, message: "Invalid Request" }, id: null },
    ]);
  });

  it("rpc call with invalid Batch: [1,2,3] → an array of three -32600", async () => {
    const invalid = {
      jsonrpc: "2.0",
      error: { code: -32600, message: "Invalid Request" },
      id: null,
    };
    expect(await client.request(`[1,2,3]`)).toStrictEqual([invalid, invalid, invalid]);
  });

  it("rpc call Batch: the mixed batch gets exactly the spec's five responses", async () => {
    const response = await client.request(`[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]`);
    expectSameBatch(response, [
      { jsonrpc: "2.0", result: 7, id: "1" },
      { jsonrpc: "2.0", result: 19, id: "2" },
      { jsonrpc: "2.0", error: { code: -32600, message: "Invalid Request" }, id: null },
      { jsonrpc: "2.0", error: { code: -32601, message: "Method not found" }, id: "5" },
      { jsonrpc: "2.0", result: ["hello", 5], id: "9" },
    ]);
    expect(notified).toStrictEqual([{ method: "notify_hello", params: [7] }]);
  });

  it("rpc call Batch (all notifications): nothing is sent back", async () => {
    await client.send(`[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]`);
    expect(await client.request(FOLLOW_UP)).toStrictEqual(FOLLOW_UP_RESPONSE);
    expect(notified).toStrictEqual([
      { method: "notify_sum", params: [1, 2, 4] },
      { method: "notify_hello", params: [7] },
    ]);
  });

  it("all examples in a row on one connection, in order", async () => {
    // The same connection survives every bad frame of the spec and keeps answering.
    const exchanges: [string, unknown][] = [
      [`{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]`, -32700],
      [`{"jsonrpc": "2.0", "method": 1, "params": "bar"}`, -32600],
      [`[]`, -32600],
      [`{"jsonrpc": "2.0", "method": "foobar", "id": "1"}`, -32601],
      [`{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}`, 19],
    ];
    for (const [text, expected] of exchanges) {
      const response = await client.request(text);
      if (typeof expected === "number" && expected < -32000) {
        expect(response.error.code).toBe(expected);
      } else {
        expect(response.result).toBe(expected);
      }
    }
    // The bad frames were reported locally, not only answered: the parse error among them.
    expect(errors.some((e) => e instanceof SyntaxError)).toBe(true);
  });
});
