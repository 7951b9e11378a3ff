// Server → client over real sockets: callbacks into the calling client while its call is
// pending, pushed notifications, broadcast, connection events, and client handlers that
// are async or throw.
import { once } from "node:events";
import {
  type Client,
  type Connection,
  connect,
  createServer,
  defineContract,
  ErrorCodes,
  type Handlers,
  method,
  notification,
  RpcError,
  type Server,
} from "ezipc";
import { afterEach, describe, expect, expectTypeOf, it } from "vitest";
import { z } from "zod";
import { gate, type ListenPlace, listenPlace, type SocketKind } from "../helpers/raw-socket.js";

const contract = defineContract({
  server: {
    /** Asks the calling client for a name (a callback while this call is pending). */
    greet: method({ params: z.object({ greeting: z.string() }), result: z.string() }),
    /** Pushes `count` notifications to the calling client, then returns. */
    push: method({ params: z.object({ count: z.number().int() }), result: z.number() }),
    /** Calls the client's `fail` and reports what came back. */
    relayFail: method({
      params: z.object({ mode: z.enum(["rpc", "plain"]) }),
      result: z.object({ name: z.string(), code: z.number(), message: z.string() }),
    }),
    ping: method({ result: z.literal("pong") }),
  },
  client: {
    ask: method({
      params: z.object({ question: z.string() }),
      result: z.object({ answer: z.string() }),
    }),
    fail: method({ params: z.object({ mode: z.enum(["rpc", "plain"]) }), result: z.string() }),
    news: notification({ params: z.object({ seq: z.number().int() }) }),
  },
});

type S = typeof contract.server;
type C = typeof contract.client;

const serverHandlers: Handlers<S, C> = {
  async greet({ greeting }, ctx) {
    const reply = await ctx.peer.call("ask", { question: "name?" });
    expectTypeOf(reply).toEqualTypeOf<{ answer: string }>();
    return `${greeting}, ${reply.answer}`;
  },
  async push({ count }, ctx) {
    for (let seq = 1; seq <= count; seq++) await ctx.peer.notify("news", { seq });
    return count;
  },
  async relayFail({ mode }, ctx) {
    try {
      await ctx.peer.call("fail", { mode });
      return { name: "none", code: 0, message: "" };
    } catch (error) {
      if (!(error instanceof RpcError)) throw error;
      return { name: error.name, code: error.code, message: error.message };
    }
  },
  ping: () => "pong" as const,
};

/** Client handlers recording what they receive. */
function clientHandlers(news: number[], onNews?: (seq: number) => void): Handlers<C, S> {
  return {
    async ask({ question }) {
      // Async on purpose: the answer comes after a real turn of the event loop.
      await new Promise((resolve) => setImmediate(resolve));
      return { answer: `ada (asked ${question})` };
    },
    async fail({ mode }) {
      await Promise.resolve();
      if (mode === "rpc") throw new RpcError(-32050, "client says no", { why: "test" });
      throw new Error("client handler bug");
    },
    news({ seq }) {
      news.push(seq);
      onNews?.(seq);
    },
  };
}

let place: ListenPlace | undefined;
let server: Server<S, C> | undefined;
const clients: Client<S>[] = [];
const serverErrors: unknown[] = [];

async function start(kind: SocketKind = "unix"): Promise<Server<S, C>> {
  place = listenPlace(kind);
  server = createServer(contract, serverHandlers, {
    onError: (error) => serverErrors.push(error),
  });
  await server.listen(place.address);
  return server;
}

async function open(
  news: number[] = [],
  onNews?: (seq: number) => void,
  onError?: (error: unknown) => void,
): Promise<Client<S>> {
  const client = await connect(contract, server!.address, {
    handlers: clientHandlers(news, onNews),
    ...(onError && { onError }),
  });
  clients.push(client);
  return client;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await server?.close({ timeout: 0 });
  server = undefined;
  place?.cleanup();
  place = undefined;
  serverErrors.length = 0;
});

describe.each(["unix", "tcp"] as const)("server → client over %s", (kind) => {
  it("a server handler calls back into the calling client while its call is pending", async () => {
    await start(kind);
    const client = await open();
    const greeting = await client.call("greet", { greeting: "hello" });
    expectTypeOf(greeting).toEqualTypeOf<string>();
    expect(greeting).toBe("hello, ada (asked name?)");
    // Many at once: each callback is routed to its own pending call.
    const many = await Promise.all(
      Array.from({ length: 20 }, (_, i) => client.call("greet", { greeting: `hi ${i}` })),
    );
    expect(many).toEqual(Array.from({ length: 20 }, (_, i) => `hi ${i}, ada (asked name?)`));
    expect(client.pendingCount).toBe(0);
    expect(server!.connections[0]!.runningCount).toBe(0);
  });

  it("a server handler pushes notifications to the calling client, in order", async () => {
    await start(kind);
    const news: number[] = [];
    const client = await open(news);
    expect(await client.call("push", { count: 5 })).toBe(5);
    // The notifications were written before the response on the same connection.
    expect(news).toEqual([1, 2, 3, 4, 5]);
  });

  it("server.connections[i].peer notifies and calls that client outside any handler", async () => {
    await start(kind);
    const news: number[] = [];
    const client = await open(news);
    await client.call("ping"); // the server has registered the connection
    const [connection] = server!.connections;
    expect(server!.connections).toHaveLength(1);
    expect(connection!.id).toMatch(/^c\d+$/);
    expect(typeof connection!.remoteAddress).toBe("string");
    expect(connection!.remoteAddress.length).toBeGreaterThan(0);
    await connection!.peer.notify("news", { seq: 42 });
    const reply = await connection!.peer.call("ask", { question: "who?" });
    expectTypeOf(reply).toEqualTypeOf<{ answer: string }>();
    expect(reply).toEqual({ answer: "ada (asked who?)" });
    expect(news).toEqual([42]);
  });
});

describe("broadcast", () => {
  it("reaches 50 clients, each exactly once, and resolves to 50", async () => {
    await start("unix");
    const counts = Array.from({ length: 50 }, () => [] as number[]);
    const opened = await Promise.all(counts.map((news) => open(news)));
    // A round trip per client: the server has registered all 50 connections.
    await Promise.all(opened.map((c) => c.call("ping")));
    expect(server!.connections).toHaveLength(50);

    expect(await server!.broadcast("news", { seq: 7 })).toBe(50);

    // The notification was written to each socket before the ping's response: once each
    // ping settles, every client has handled whatever the broadcast sent it.
    await Promise.all(opened.map((c) => c.call("ping")));
    expect(counts.map((news) => news.length)).toEqual(counts.map(() => 1));
    expect(counts.every((news) => news[0] === 7)).toBe(true);
  });

  it("skips connections that are gone and counts only those reached", async () => {
    await start("unix");
    const a: number[] = [];
    const b: number[] = [];
    const first = await open(a);
    const second = await open(b);
    await Promise.all([first.call("ping"), second.call("ping")]);
    const gone = once(server!, "disconnect");
    await second.close();
    await gone;
    expect(await server!.broadcast("news", { seq: 1 })).toBe(1);
    await first.call("ping");
    expect(a).toEqual([1]);
    expect(b).toEqual([]);
  });

  it("validates params before sending anything", async () => {
    await start("unix");
    const news: number[] = [];
    const client = await open(news);
    await client.call("ping");
    // A broadcast whose params fail the schema reaches nobody.
    // @ts-expect-error seq must be an integer number
    expect(await server!.broadcast("news", { seq: "x" })).toBe(0);
    await client.call("ping");
    expect(news).toEqual([]);
  });
});

describe("connection events", () => {
  it("connect and disconnect fire once each, with the same connection", async () => {
    await start("unix");
    const connects: Connection<C>[] = [];
    const disconnects: [Connection<C>, Error | undefined][] = [];
    server!.on("connect", (c) => connects.push(c));
    server!.on("disconnect", (c, error) => disconnects.push([c, error]));

    const client = await open();
    await client.call("ping");
    expect(connects).toHaveLength(1);
    expect(disconnects).toHaveLength(0);
    expect(server!.connections).toEqual(connects);

    const gone = once(server!, "disconnect");
    await client.close();
    await gone;
    expect(disconnects).toHaveLength(1);
    expect(disconnects[0]![0]).toBe(connects[0]);
    expect(disconnects[0]![0].closed).toBe(true);
    expect(server!.connections).toEqual([]);

    // Nothing fires again when the server closes afterwards.
    await server!.close();
    expect(connects).toHaveLength(1);
    expect(disconnects).toHaveLength(1);
  });

  it("a connection closed by the server fires disconnect once", async () => {
    await start("unix");
    const disconnects: Connection<C>[] = [];
    server!.on("disconnect", (c) => disconnects.push(c));
    const client = await open();
    await client.call("ping");
    const closed = once(client, "close");
    await server!.connections[0]!.close();
    await closed;
    expect(disconnects).toHaveLength(1);
    expect(client.closed).toBe(true);
  });
});

describe("client handlers", () => {
  it("can be async and throw RpcError back to the server as it is", async () => {
    await start("unix");
    const client = await open();
    await expect(client.call("relayFail", { mode: "rpc" })).resolves.toEqual({
      name: "RpcError",
      code: -32050,
      message: "client says no",
    });
    // Outside a handler too, with the data intact.
    await client.call("ping");
    await expect(server!.connections[0]!.peer.call("fail", { mode: "rpc" })).rejects.toMatchObject({
      name: "RpcError",
      code: -32050,
      message: "client says no",
      data: { why: "test" },
    });
  });

  it("a plain throw reaches the server as -32603 and is reported on the client", async () => {
    await start("unix");
    const clientErrors: unknown[] = [];
    const client = await open([], undefined, (error) => clientErrors.push(error));
    await expect(client.call("relayFail", { mode: "plain" })).resolves.toEqual({
      name: "RpcError",
      code: ErrorCodes.InternalError,
      message: "Internal error",
    });
    expect(clientErrors).toHaveLength(1);
    expect(clientErrors[0]).toMatchObject({ message: "client handler bug" });
  });

  it("server → client params are validated like the other direction", async () => {
    await start("unix");
    const client = await open();
    await client.call("ping");
    const peer = server!.connections[0]!.peer;
    // @ts-expect-error question must be a string
    await expect(peer.call("ask", { question: 1 })).rejects.toMatchObject({
      name: "ValidationError",
      target: "params",
    });
    expect(client.pendingCount).toBe(0);
  });

  it("pushes from a handler and a broadcast interleave without loss", async () => {
    await start("unix");
    const news: number[] = [];
    const all = gate();
    const client = await open(news, () => {
      if (news.length === 11) all.resolve();
    });
    await client.call("ping");
    const [pushed, reached] = await Promise.all([
      client.call("push", { count: 10 }),
      server!.broadcast("news", { seq: 100 }),
    ]);
    await all.promise;
    expect(pushed).toBe(10);
    expect(reached).toBe(1);
    expect([...news].sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100]);
  });
});
