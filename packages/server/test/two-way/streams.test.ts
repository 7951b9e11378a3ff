// Streams over real sockets: flow control measured by counts, early exit, errors, a killed
// server, abort, and streams served by the client.
import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import {
  AbortError,
  type Client,
  ConnectionClosedError,
  connect,
  createServer,
  defineContract,
  ErrorCodes,
  type Handlers,
  method,
  RpcError,
  type Server,
  stream,
  TimeoutError,
  ValidationError,
} from "ezipc";
import { afterEach, describe, expect, expectTypeOf, it } from "vitest";
import { z } from "zod";
import { type Gate, gate, type ListenPlace, listenPlace } from "../helpers/raw-socket.js";
import { ticker } from "./fixtures/stream-contract.js";

const contract = defineContract({
  server: {
    /** Yields `{ i }` for i = 0 … n-1, counting what it yields for the flow-control test. */
    count: stream({
      params: z.object({ n: z.number().int().nonnegative() }),
      item: z.object({ i: z.number().int() }),
    }),
    /** Yields 0, 1, 2, … until the consumer stops it; `finally` reports to the test. */
    forever: stream({ params: z.object({ key: z.string() }), item: z.number() }),
    /** Yields 0, 1, 2, then fails as `mode` says. */
    failing: stream({
      params: z.object({ mode: z.enum(["rpc", "plain", "item"]) }),
      item: z.number(),
    }),
    /** Reads the calling client's `letters` stream while this call is pending. */
    collect: method({ params: z.object({ n: z.number().int() }), result: z.array(z.string()) }),
    ping: method({ result: z.literal("pong") }),
  },
  client: {
    /** Served by the client: "a", "b", … */
    letters: stream({ params: z.object({ n: z.number().int() }), item: z.string() }),
  },
});

type S = typeof contract.server;
type C = typeof contract.client;

/** The producer side of `count`, as the test sees it. */
const counting = { produced: 0, consumed: 0, maxAhead: 0 };

/** One `forever` generator's lifecycle. */
interface Forever {
  yielded: number;
  /** Resolves with `ctx.signal.reason` when the generator's `finally` runs. */
  readonly finished: Gate<unknown>;
}
let forevers = new Map<string, Forever>();
function foreverFor(key: string): Forever {
  let f = forevers.get(key);
  if (f === undefined) {
    f = { yielded: 0, finished: gate<unknown>() };
    forevers.set(key, f);
  }
  return f;
}

const serverHandlers: Handlers<S, C> = {
  async *count({ n }) {
    for (let i = 0; i < n; i++) {
      counting.produced++;
      counting.maxAhead = Math.max(counting.maxAhead, counting.produced - counting.consumed);
      yield { i };
    }
  },
  async *forever({ key }, ctx) {
    const f = foreverFor(key);
    try {
      // Bounded only for safety: the consumer always stops it long before.
      for (let n = 0; n < 1e7; n++) {
        f.yielded++;
        yield n;
      }
    } finally {
      f.finished.resolve(ctx.signal.reason);
    }
  },
  async *failing({ mode }) {
    yield 0;
    yield 1;
    yield 2;
    if (mode === "rpc") throw new RpcError(-32077, "out of rows", { table: "t" });
    if (mode === "plain") throw new Error("generator bug");
    yield "three" as unknown as number; // fails the item schema on the producer
  },
  async collect({ n }, ctx) {
    const letters: string[] = [];
    for await (const letter of ctx.peer.stream("letters", { n }, { window: 2 })) {
      expectTypeOf(letter).toEqualTypeOf<string>();
      letters.push(letter);
    }
    return letters;
  },
  ping: () => "pong" as const,
};

const clientHandlers: Handlers<C, S> = {
  async *letters({ n }) {
    for (let i = 0; i < n; i++) yield String.fromCharCode(97 + (i % 26));
  },
};

let place: ListenPlace | undefined;
let server: Server<S, C> | undefined;
const clients: Client<any>[] = [];
const serverErrors: unknown[] = [];
let child: ChildProcess | undefined;

async function start(): Promise<Server<S, C>> {
  place = listenPlace("unix");
  server = createServer(contract, serverHandlers, {
    onError: (error) => serverErrors.push(error),
  });
  await server.listen(place.address);
  return server;
}

async function open(): Promise<Client<S>> {
  const client = await connect(contract, server!.address, { handlers: clientHandlers });
  clients.push(client);
  return client;
}

/** One macrotask turn: lets sockets deliver, without any timer. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await server?.close({ timeout: 0 });
  server = undefined;
  place?.cleanup();
  place = undefined;
  if (child !== undefined && child.exitCode === null && child.signalCode === null) {
    const exited = once(child, "exit");
    child.kill("SIGKILL");
    await exited;
  }
  child = undefined;
  serverErrors.length = 0;
  forevers = new Map();
  Object.assign(counting, { produced: 0, consumed: 0, maxAhead: 0 });
});

describe("flow control", () => {
  it.each([
    { total: 100_000, window: 32 as number | undefined, W: 32 },
    // The default window, on a shorter stream to keep the suite fast.
    { total: 10_000, window: undefined, W: 64 },
  ])(
    "$total items to a slow consumer stay within the window on both sides (window $W)",
    async ({ total, window, W }) => {
      await start();
      const client = await open();
      const iterable = client.stream("count", { n: total }, window ? { window } : {});
      expectTypeOf(iterable).toEqualTypeOf<AsyncIterable<{ i: number }>>();
      const it = iterable[Symbol.asyncIterator]() as AsyncIterator<{ i: number }> & {
        readonly buffered: number;
      };

      const every = total / 5;
      let maxBuffered = 0;
      let outOfOrder = 0;
      let pauses = 0;
      for (let k = 0; k < total; k++) {
        if (k % every === 0) {
          // The consumer stalls: the producer fills the window, then must stop there.
          for (let spin = 0; spin < 10_000 && it.buffered < W / 2; spin++) await turn();
          for (let spin = 0; spin < 20; spin++) await turn();
          expect(it.buffered).toBeGreaterThanOrEqual(W / 2);
          expect(it.buffered).toBeLessThanOrEqual(W);
          expect(counting.produced - counting.consumed).toBeLessThanOrEqual(W + 2);
          expect(counting.produced).toBeLessThan(total);
          pauses++;
        }
        const step = await it.next();
        if (step.done || step.value.i !== k) outOfOrder++;
        counting.consumed++;
        maxBuffered = Math.max(maxBuffered, it.buffered);
        // Slow: a macrotask turn between items lets the producer race ahead if it could.
        if (k % 2 === 0) await turn();
      }
      expect(await it.next()).toEqual({ value: undefined, done: true });

      expect(outOfOrder).toBe(0);
      expect(pauses).toBe(5);
      expect(counting.produced).toBe(total);
      expect(maxBuffered).toBeLessThanOrEqual(W);
      expect(counting.maxAhead).toBeLessThanOrEqual(W + 2);
      expect(client.pendingCount).toBe(0);
      await client.call("ping");
      expect(server!.connections[0]!.runningCount).toBe(0);
    },
  );

  it("a consumer that keeps up receives everything in order", async () => {
    await start();
    const client = await open();
    const items: number[] = [];
    for await (const { i } of client.stream("count", { n: 1_000 }, { window: 4 })) items.push(i);
    expect(items).toEqual(Array.from({ length: 1_000 }, (_, i) => i));
    expect(client.pendingCount).toBe(0);
  });

  it("an empty stream ends at once", async () => {
    await start();
    const client = await open();
    const items: unknown[] = [];
    for await (const item of client.stream("count", { n: 0 })) items.push(item);
    expect(items).toEqual([]);
  });
});

describe("leaving early", () => {
  it("break after 3 items runs the generator's finally", async () => {
    await start();
    const client = await open();
    const seen: number[] = [];
    for await (const n of client.stream("forever", { key: "b" })) {
      seen.push(n);
      if (seen.length === 3) break;
    }
    expect(seen).toEqual([0, 1, 2]);
    expect(client.pendingCount).toBe(0);
    const reason = await foreverFor("b").finished.promise;
    expect(reason).toMatchObject({ code: ErrorCodes.RequestCancelled });
    await client.call("ping");
    expect(server!.connections[0]!.runningCount).toBe(0);
    // The generator stopped within the window it had been granted.
    expect(foreverFor("b").yielded).toBeLessThanOrEqual(64 + 1);
  });

  it("an aborted signal ends the loop with AbortError and the generator's finally runs", async () => {
    await start();
    const client = await open();
    const controller = new AbortController();
    const seen: number[] = [];
    const loop = (async () => {
      for await (const n of client.stream("forever", { key: "a" }, { signal: controller.signal })) {
        seen.push(n);
        if (seen.length === 3) controller.abort();
        if (seen.length > 1_000) throw new Error("the loop did not end");
      }
    })();
    await expect(loop).rejects.toBeInstanceOf(AbortError);
    await expect(loop).rejects.toMatchObject({ name: "AbortError" });
    expect(seen).toEqual([0, 1, 2]);
    expect(client.pendingCount).toBe(0);
    await expect(foreverFor("a").finished.promise).resolves.toMatchObject({
      code: ErrorCodes.RequestCancelled,
    });
  });

  it("a signal aborted before iteration rejects the first next() and sends nothing", async () => {
    await start();
    const client = await open();
    const controller = new AbortController();
    controller.abort();
    const it = client.stream("forever", { key: "never" }, { signal: controller.signal });
    await expect(it[Symbol.asyncIterator]().next()).rejects.toBeInstanceOf(AbortError);
    await client.call("ping");
    expect(forevers.has("never")).toBe(false);
  });

  it("a stream timeout ends the loop with TimeoutError and stops the generator", async () => {
    await start();
    const client = await open();
    const loop = (async () => {
      let n = 0;
      // Slow consumer: the stream outlives its 50 ms.
      for await (const _ of client.stream("forever", { key: "t" }, { timeout: 50, window: 1 })) {
        if (++n > 1e7) throw new Error("the loop did not end");
        await turn();
      }
    })();
    await expect(loop).rejects.toBeInstanceOf(TimeoutError);
    await expect(foreverFor("t").finished.promise).resolves.toMatchObject({
      code: ErrorCodes.RequestCancelled,
    });
    expect(client.pendingCount).toBe(0);
  });
});

describe("errors", () => {
  async function drain(iterable: AsyncIterable<number>, seen: number[]): Promise<void> {
    for await (const n of iterable) {
      seen.push(n);
      if (seen.length > 100) throw new Error("the loop did not end");
    }
  }

  it("items yielded before the generator throws reach the consumer before the error", async () => {
    await start();
    const client = await open();
    for (const mode of ["rpc", "plain", "item"] as const) {
      const seen: number[] = [];
      await expect(drain(client.stream("failing", { mode }), seen)).rejects.toBeInstanceOf(
        RpcError,
      );
      // The producer wrote items 0, 1 and 2 before its error response, in order, on one
      // connection: like the end of a stream, the error comes after what was sent.
      expect({ mode, seen }).toEqual({ mode, seen: [0, 1, 2] });
    }
  });

  it("a generator that throws RpcError gives the consumer that RpcError", async () => {
    await start();
    const client = await open();
    const seen: number[] = [];
    const loop = drain(client.stream("failing", { mode: "rpc" }), seen);
    await expect(loop).rejects.toBeInstanceOf(RpcError);
    await expect(loop).rejects.toMatchObject({
      code: -32077,
      message: "out of rows",
      data: { table: "t" },
    });
    expect(seen).toEqual([0, 1, 2].slice(0, seen.length)); // see "items yielded before…"
    expect(serverErrors).toEqual([]);
    expect(client.pendingCount).toBe(0);
  });

  it("a generator that throws a plain Error gives -32603 and is reported on the server", async () => {
    await start();
    const client = await open();
    const seen: number[] = [];
    const loop = drain(client.stream("failing", { mode: "plain" }), seen);
    await expect(loop).rejects.toBeInstanceOf(RpcError);
    await expect(loop).rejects.toMatchObject({
      code: ErrorCodes.InternalError,
      message: "Internal error",
    });
    expect(seen).toEqual([0, 1, 2].slice(0, seen.length)); // see "items yielded before…"
    expect(serverErrors).toHaveLength(1);
    expect(serverErrors[0]).toMatchObject({ message: "generator bug" });
  });

  it("an item failing the item schema on the producer: -32603 to the consumer, ValidationError to onError", async () => {
    await start();
    const client = await open();
    const seen: number[] = [];
    const loop = drain(client.stream("failing", { mode: "item" }), seen);
    await expect(loop).rejects.toMatchObject({ name: "RpcError", code: ErrorCodes.InternalError });
    expect(seen).toEqual([0, 1, 2].slice(0, seen.length)); // see "items yielded before…"
    expect(serverErrors).toHaveLength(1);
    expect(serverErrors[0]).toBeInstanceOf(ValidationError);
    expect(serverErrors[0]).toMatchObject({ target: "item" });
  });

  it("params failing the schema reject the first next() with ValidationError", async () => {
    await start();
    const client = await open();
    const it = client.stream("count", { n: -1 })[Symbol.asyncIterator]();
    await expect(it.next()).rejects.toMatchObject({ name: "ValidationError", target: "params" });
    expect(client.pendingCount).toBe(0);
  });

  it("a killed server ends the consumer's loop with ConnectionClosedError", async () => {
    const local = listenPlace("unix");
    place = local;
    const file = fileURLToPath(new URL("./fixtures/stream-server.ts", import.meta.url));
    const proc = fork(file, [local.address], {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    });
    child = proc;
    const [message] = (await Promise.race([
      once(proc, "message"),
      once(proc, "exit").then(() => {
        throw new Error("the fixture server exited before it was ready");
      }),
    ])) as [unknown];
    expect(message).toBe("ready");

    const client = await connect(ticker, local.address);
    clients.push(client);
    const seen: number[] = [];
    const exited = once(proc, "exit");
    const loop = (async () => {
      for await (const { n } of client.stream("ticks", undefined, { window: 8 })) {
        seen.push(n);
        if (seen.length === 5) proc.kill("SIGKILL");
        if (seen.length > 1_000_000) throw new Error("the loop did not end");
      }
    })();
    await expect(loop).rejects.toBeInstanceOf(ConnectionClosedError);
    expect(seen.slice(0, 5)).toEqual([0, 1, 2, 3, 4]);
    const [, signal] = await exited;
    expect(signal).toBe("SIGKILL");
    expect(client.pendingCount).toBe(0);
  });
});

describe("the other direction", () => {
  it("the server reads a stream served by the client, through server.connections", async () => {
    await start();
    const client = await open();
    await client.call("ping");
    const letters: string[] = [];
    const iterable = server!.connections[0]!.peer.stream("letters", { n: 30 }, { window: 4 });
    expectTypeOf(iterable).toEqualTypeOf<AsyncIterable<string>>();
    for await (const letter of iterable) letters.push(letter);
    expect(letters.join("")).toBe("abcdefghijklmnopqrstuvwxyzabcd");
  });

  it("a server handler reads the calling client's stream while the call is pending", async () => {
    await start();
    const client = await open();
    await expect(client.call("collect", { n: 5 })).resolves.toEqual(["a", "b", "c", "d", "e"]);
    expect(client.pendingCount).toBe(0);
  });

  it("the server leaving a client's stream early stops the client's generator", async () => {
    await start();
    const finished = gate<string>();
    const client = await connect(contract, server!.address, {
      handlers: {
        async *letters() {
          try {
            for (let i = 0; i < 1e7; i++) yield "x";
          } finally {
            finished.resolve("finally ran");
          }
        },
      },
    });
    clients.push(client);
    await client.call("ping");
    let n = 0;
    for await (const _ of server!.connections[0]!.peer.stream("letters", { n: 0 })) {
      if (++n === 3) break;
    }
    await expect(finished.promise).resolves.toBe("finally ran");
  });
});
