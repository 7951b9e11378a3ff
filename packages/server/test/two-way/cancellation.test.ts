// One call lifecycle over real sockets: abort, timeout, the deadline that travels with the
// request, late results, and a lost connection — each seen from both ends.
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
  TimeoutError,
} from "ezipc";
import { afterEach, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  type Gate,
  gate,
  type ListenPlace,
  listenPlace,
  RawClient,
  type SocketKind,
} from "../helpers/raw-socket.js";

const contract = defineContract({
  server: {
    /** Runs until its `ctx.signal` aborts, then throws the abort reason. */
    hang: method({ params: z.object({ key: z.string() }), result: z.string() }),
    /** Reports the handler's `ctx.deadline` (`null` when there is none). */
    deadline: method({ result: z.object({ deadline: z.number().nullable() }) }),
    /** Returns once the test releases it; never looks at its signal. */
    late: method({ params: z.object({ key: z.string() }), result: z.string() }),
    ping: method({ result: z.literal("pong") }),
  },
});

type S = typeof contract.server;

/** What one `hang` handler exposes to the test. */
interface Hanging {
  readonly signal: AbortSignal;
  readonly deadline: number | undefined;
  /** Resolves with the abort reason once the handler saw its signal abort. */
  readonly reason: Promise<unknown>;
}

let place: ListenPlace | undefined;
let server: Server<S> | undefined;
const clients: Client<S>[] = [];
const raws: RawClient[] = [];
let started = new Map<string, Gate<Hanging>>();
let release = new Map<string, Gate<string>>();
let lateDone = new Map<string, Gate>();

function gateFor<T>(map: Map<string, Gate<T>>, key: string): Gate<T> {
  let g = map.get(key);
  if (g === undefined) {
    g = gate<T>();
    map.set(key, g);
  }
  return g;
}

function aborted(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(signal.reason), { once: true }),
  );
}

const handlers: Handlers<S> = {
  async hang({ key }, ctx) {
    const reason = aborted(ctx.signal);
    gateFor(started, key).resolve({ signal: ctx.signal, deadline: ctx.deadline, reason });
    throw await reason;
  },
  deadline: (_params, ctx) => ({ deadline: ctx.deadline ?? null }),
  async late({ key }) {
    const value = await gateFor(release, key).promise;
    gateFor(lateDone, key).resolve();
    return value;
  },
  ping: () => "pong" as const,
};

async function start(kind: SocketKind = "unix"): Promise<Server<S>> {
  place = listenPlace(kind);
  server = createServer(contract, handlers);
  await server.listen(place.address);
  return server;
}

async function open(options: { timeout?: number; onError?: (e: unknown) => void } = {}) {
  const client = await connect(contract, server!.address, options);
  clients.push(client);
  return client;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(raws.splice(0).map((r) => r.destroy()));
  await server?.close({ timeout: 0 });
  server = undefined;
  place?.cleanup();
  place = undefined;
  started = new Map();
  release = new Map();
  lateDone = new Map();
});

describe.each(["unix", "tcp"] as const)("cancellation over %s", (kind) => {
  it("an aborted call rejects at once, the handler's signal aborts, nothing is left pending", async () => {
    await start(kind);
    const client = await open();
    const controller = new AbortController();
    const call = client.call("hang", { key: "a" }, { signal: controller.signal });
    const handler = await gateFor(started, "a").promise;
    expect(handler.signal.aborted).toBe(false);
    expect(client.pendingCount).toBe(1);

    controller.abort();
    // Rejected synchronously on abort: no response from the server is awaited.
    expect(client.pendingCount).toBe(0);
    await expect(call).rejects.toBeInstanceOf(AbortError);
    await expect(call).rejects.toMatchObject({ name: "AbortError" });

    const reason = await handler.reason;
    expect(reason).toBeInstanceOf(RpcError);
    expect(reason).toMatchObject({ code: ErrorCodes.RequestCancelled });
    expect(handler.signal.aborted).toBe(true);

    // A round trip after the handler ended: the server's running count is back to 0.
    await expect(client.call("ping")).resolves.toBe("pong");
    expect(client.pendingCount).toBe(0);
    expect(server!.connections[0]!.runningCount).toBe(0);
  });

  it("a call whose signal is already aborted never reaches the server", async () => {
    await start(kind);
    const client = await open();
    const controller = new AbortController();
    controller.abort();
    await expect(
      client.call("hang", { key: "never" }, { signal: controller.signal }),
    ).rejects.toMatchObject({ name: "AbortError" });
    await client.call("ping");
    expect(started.has("never")).toBe(false);
    expect(client.pendingCount).toBe(0);
  });

  it("a timed-out call rejects with TimeoutError and the handler's signal aborts", async () => {
    await start(kind);
    const client = await open();
    const call = client.call("hang", { key: "t" }, { timeout: 50 });
    const handler = await gateFor(started, "t").promise;
    await expect(call).rejects.toBeInstanceOf(TimeoutError);
    await expect(call).rejects.toMatchObject({ name: "TimeoutError", timeout: 50 });
    expect(client.pendingCount).toBe(0);
    // Cancelled by the caller's rpc.cancel, or by the deadline that travelled with the
    // request — whichever the server saw first; both abort the signal.
    const reason = await handler.reason;
    expect(reason).toBeInstanceOf(RpcError);
    expect([ErrorCodes.RequestCancelled, ErrorCodes.DeadlineExceeded]).toContain(
      (reason as RpcError).code,
    );
    await client.call("ping");
    expect(server!.connections[0]!.runningCount).toBe(0);
  });
});

describe("deadlines", () => {
  it("the caller's timeout travels with the request and becomes ctx.deadline", async () => {
    await start();
    const client = await open();
    const before = Date.now();
    const { deadline } = await client.call("deadline", undefined, { timeout: 5_000 });
    const after = Date.now();
    expect(deadline).not.toBeNull();
    expect(deadline!).toBeGreaterThanOrEqual(before + 5_000);
    expect(deadline!).toBeLessThanOrEqual(after + 5_000);
  });

  it("a call without its own timeout carries the client's default (30 s)", async () => {
    await start();
    const client = await open();
    const before = Date.now();
    const { deadline } = await client.call("deadline");
    const after = Date.now();
    expect(deadline!).toBeGreaterThanOrEqual(before + 30_000);
    expect(deadline!).toBeLessThanOrEqual(after + 30_000);
  });

  it("the client's timeout option sets the default deadline", async () => {
    await start();
    const client = await open({ timeout: 12_000 });
    const before = Date.now();
    const { deadline } = await client.call("deadline");
    const after = Date.now();
    expect(deadline!).toBeGreaterThanOrEqual(before + 12_000);
    expect(deadline!).toBeLessThanOrEqual(after + 12_000);
  });

  it("a call that waits forever carries no deadline", async () => {
    await start();
    const client = await open({ timeout: 0 });
    await expect(client.call("deadline")).resolves.toEqual({ deadline: null });
    await expect(client.call("deadline", undefined, { timeout: Infinity })).resolves.toEqual({
      deadline: null,
    });
  });

  it("ctx.signal aborts at the deadline with DeadlineExceeded, with no message from the caller", async () => {
    await start();
    // A raw peer sends the deadline and then never cancels: only the deadline can abort.
    const raw = await RawClient.connect(server!.address);
    raws.push(raw);
    const before = Date.now();
    await raw.send(
      JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "hang",
        params: { key: "d" },
        ezipc: { timeout: 100 },
      }),
    );
    const handler = await gateFor(started, "d").promise;
    expect(handler.deadline).toBeGreaterThanOrEqual(before + 100);
    const reason = await handler.reason;
    expect(reason).toBeInstanceOf(RpcError);
    expect(reason).toMatchObject({ code: ErrorCodes.DeadlineExceeded });
    // The handler rethrew its abort reason: the raw caller gets that error.
    await expect(raw.next()).resolves.toEqual({
      jsonrpc: "2.0",
      id: 1,
      error: { code: ErrorCodes.DeadlineExceeded, message: "Deadline exceeded" },
    });
    expect(server!.connections[0]!.runningCount).toBe(0);
  });

  it("a plain JSON-RPC request (no ezipc member) has no deadline", async () => {
    await start();
    const raw = await RawClient.connect(server!.address);
    raws.push(raw);
    await expect(
      raw.request(JSON.stringify({ jsonrpc: "2.0", id: 2, method: "deadline" })),
    ).resolves.toEqual({ jsonrpc: "2.0", id: 2, result: { deadline: null } });
  });
});

describe("late results", () => {
  it("a result arriving after the timeout is dropped silently", async () => {
    await start();
    const clientErrors: unknown[] = [];
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      const client = await open({ onError: (e) => clientErrors.push(e) });
      const call = client.call("late", { key: "l" }, { timeout: 50 });
      await expect(call).rejects.toBeInstanceOf(TimeoutError);
      expect(client.pendingCount).toBe(0);

      gateFor(release, "l").resolve("too late");
      await gateFor(lateDone, "l").promise;
      // The late response was written before the ping's response: once ping settles, the
      // client has received (and dropped) it.
      await expect(client.call("ping")).resolves.toBe("pong");
      // One more turn for any rejection to surface as unhandled.
      await new Promise((resolve) => setImmediate(resolve));
      expect(unhandled).toEqual([]);
      expect(clientErrors).toEqual([]);
      expect(client.pendingCount).toBe(0);
      expect(server!.connections[0]!.runningCount).toBe(0);
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
  });

  it("a result arriving after an abort is dropped silently", async () => {
    await start();
    const clientErrors: unknown[] = [];
    const client = await open({ onError: (e) => clientErrors.push(e) });
    const controller = new AbortController();
    const call = client.call("late", { key: "a" }, { signal: controller.signal });
    await client.call("ping"); // the request reached the server
    controller.abort();
    await expect(call).rejects.toMatchObject({ name: "AbortError" });
    gateFor(release, "a").resolve("too late");
    await gateFor(lateDone, "a").promise;
    await client.call("ping");
    expect(clientErrors).toEqual([]);
    expect(client.pendingCount).toBe(0);
  });
});

describe("a lost connection", () => {
  it("server.close aborts every running handler's ctx.signal", async () => {
    await start();
    const client = await open();
    const keys = ["x", "y", "z"];
    // Settled as they reject, so none is briefly unhandled while the test awaits others.
    const calls = Promise.allSettled(keys.map((key) => client.call("hang", { key })));
    const handlers = await Promise.all(keys.map((key) => gateFor(started, key).promise));
    expect(server!.connections[0]!.runningCount).toBe(3);

    await server!.close({ timeout: 0 });
    const reasons = await Promise.all(handlers.map((h) => h.reason));
    for (const reason of reasons) expect(reason).toBeInstanceOf(ConnectionClosedError);
    for (const call of await calls) {
      expect(call.status).toBe("rejected");
      expect((call as PromiseRejectedResult).reason).toBeInstanceOf(ConnectionClosedError);
    }
    expect(client.pendingCount).toBe(0);
  });

  it("a destroyed client socket aborts every running handler's ctx.signal", async () => {
    await start();
    const raw = await RawClient.connect(server!.address);
    raws.push(raw);
    const keys = ["p", "q", "r"];
    for (const [i, key] of keys.entries()) {
      await raw.send(JSON.stringify({ jsonrpc: "2.0", id: i, method: "hang", params: { key } }));
    }
    const handlers = await Promise.all(keys.map((key) => gateFor(started, key).promise));
    const connection = server!.connections[0]!;
    expect(connection.runningCount).toBe(3);

    await raw.destroy();
    const reasons = await Promise.all(handlers.map((h) => h.reason));
    for (const reason of reasons) {
      expect(reason).toBeInstanceOf(ConnectionClosedError);
      expect(reason).toMatchObject({ name: "ConnectionClosedError" });
    }
    for (const h of handlers) expect(h.signal.aborted).toBe(true);
  });

  it("a client closing its end aborts the handlers it was waiting on", async () => {
    await start();
    const client = await open();
    const call = client.call("hang", { key: "c" });
    call.catch(() => {}); // asserted below, after the close
    const handler = await gateFor(started, "c").promise;
    await client.close();
    await expect(call).rejects.toBeInstanceOf(ConnectionClosedError);
    await expect(handler.reason).resolves.toBeInstanceOf(ConnectionClosedError);
  });
});
