// Reconnect: states and events, calls that wait for the connection, at-most-once delivery
// with opt-in retries of idempotent methods, authentication failures, handlers and streams
// across a reconnect, bounds, and close().
import { once } from "node:events";
import { createServer as createNetServer } from "node:net";
import { join } from "node:path";
import type { ClientState, ReconnectAttempt } from "@ezipc/client";
import {
  AbortError,
  AuthenticationError,
  ConnectionClosedError,
  ErrorCodes,
  TimeoutError,
  ValidationError,
} from "ezipc";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { closeAll, type Harness, openClient, range, startServer, tempDir } from "./harness.js";

let temp: ReturnType<typeof tempDir>;
let address: string;

beforeEach(() => {
  temp = tempDir();
  address = `unix:${join(temp.dir, "rpc.sock")}`;
});

afterEach(async () => {
  try {
    await closeAll();
  } finally {
    temp.cleanup();
  }
});

/** Drops every connection of `harness` from the server side (the client did not ask). */
async function drop(harness: Harness): Promise<void> {
  await Promise.all(harness.server.connections.map((c) => c.close()));
}

/** What a promise ended with, without letting it reject. */
function outcome<T>(promise: Promise<T>): Promise<T | Error> {
  return promise.then(
    (value) => value,
    (error: Error) => error,
  );
}

const fast = { initialDelay: 10, maxDelay: 50 };

describe("without reconnect (the default)", () => {
  it("a lost connection closes the client; later calls fail at once with ConnectionClosedError", async () => {
    const harness = await startServer(address);
    const client = await openClient(address);
    const closed = once(client, "close");
    await drop(harness);
    await closed;
    expect(client.state).toBe("closed");
    expect(client.closed).toBe(true);
    await expect(client.call("echo", { n: 1 })).rejects.toBeInstanceOf(ConnectionClosedError);
    await expect(client.notify("log", { line: "x" })).rejects.toBeInstanceOf(ConnectionClosedError);
    expect(harness.runs.get("echo")).toBeUndefined();
  });

  it("close() writes queued notifications before it closes the socket", async () => {
    const harness = await startServer(address);
    const client = await openClient(address, { heartbeat: false });
    const sent = range(200).map((n) => client.notify("log", { line: `line ${n}` }));
    await client.close();
    await Promise.all(sent);
    await harness.logged("line 199");
    expect(harness.lines).toEqual(range(200).map((n) => `line ${n}`));
  });
});

describe("with reconnect", () => {
  it("goes connected → reconnecting → connecting → connected on a drop, with events", async () => {
    const harness = await startServer(address);
    const client = await openClient(address, { reconnect: fast });
    expect(client.state).toBe("connected");
    const events: string[] = [];
    client.on("state", (state, previous) => events.push(`state ${previous}→${state}`));
    client.on("disconnect", () => events.push("disconnect"));
    client.on("reconnecting", ({ attempt }) => events.push(`reconnecting #${attempt}`));
    client.on("connect", (info) => events.push(`connect ${info.transport}`));
    const reconnected = once(client, "connect");
    await drop(harness);
    await reconnected;
    expect(events).toEqual([
      "disconnect",
      "state connected→reconnecting",
      "reconnecting #1",
      "state reconnecting→connecting",
      "state connecting→connected",
      "connect unix",
    ]);
    expect(await client.call("echo", { n: 5 })).toBe(5);
    expect(client.connection.transport).toBe("unix");
  });

  it("calls made while the server is away wait for it and are sent exactly once", async () => {
    const first = await startServer(address, "first");
    const client = await openClient(address, { reconnect: fast });
    await first.server.close();
    expect(["reconnecting", "connecting"]).toContain(client.state);
    const calls = range(20).map((n) => client.call("echo", { n }, { timeout: 10_000 }));
    const note = client.notify("log", { line: "queued while away" });
    expect(client.pendingCount).toBe(21);
    const reconnected = once(client, "connect");
    const second = await startServer(address, "second");
    await reconnected;
    expect(await Promise.all(calls)).toEqual(range(20));
    await note;
    await second.logged("queued while away");
    expect(second.seen.get("echo")).toEqual(range(20));
    expect(first.runs.get("echo")).toBeUndefined();
    expect(await client.call("whoami")).toBe("second");
  });

  it("waitForConnection: false fails fast while disconnected; the call is never sent", async () => {
    const first = await startServer(address);
    const client = await openClient(address, {
      reconnect: { ...fast, waitForConnection: false },
    });
    await first.server.close();
    const error = await outcome(client.call("echo", { n: 1 }));
    expect(error).toBeInstanceOf(ConnectionClosedError);
    expect((error as Error).message).toMatch(/not sent.*waitForConnection/);
    await expect(client.notify("log", { line: "x" })).rejects.toBeInstanceOf(ConnectionClosedError);
    const reconnected = once(client, "connect");
    const second = await startServer(address);
    await reconnected;
    expect(await client.call("echo", { n: 2 })).toBe(2);
    expect(second.seen.get("echo")).toEqual([2]);
  });

  it("a call that waits past its timeout rejects with TimeoutError and is never sent", async () => {
    const first = await startServer(address);
    const client = await openClient(address, { reconnect: fast });
    await first.server.close();
    const error = await outcome(client.call("echo", { n: 1 }, { timeout: 30 }));
    expect(error).toBeInstanceOf(TimeoutError);
    expect(error).toMatchObject({ timeout: 30 });
    expect((error as Error).message).toMatch(/waiting for a connection.*not sent/);
    expect(client.pendingCount).toBe(0);
    const reconnected = once(client, "connect");
    const second = await startServer(address);
    await reconnected;
    expect(await client.call("echo", { n: 2 })).toBe(2);
    expect(second.seen.get("echo")).toEqual([2]);
  });

  it("an abort while waiting rejects with AbortError; bad params fail at once, not at the timeout", async () => {
    const first = await startServer(address);
    const client = await openClient(address, { reconnect: fast });
    await first.server.close();
    const controller = new AbortController();
    const call = outcome(client.call("echo", { n: 1 }, { signal: controller.signal }));
    controller.abort(new Error("changed my mind"));
    expect(await call).toBeInstanceOf(AbortError);
    await expect(
      client.call("echo", { n: "x" } as unknown as { n: number }, { timeout: 60_000 }),
    ).rejects.toBeInstanceOf(ValidationError);
    expect(client.pendingCount).toBe(0);
  });

  it("calls in flight at a drop reject with ConnectionClosedError and are not resent", async () => {
    const harness = await startServer(address);
    const client = await openClient(address, { reconnect: fast });
    harness.holdReads = true;
    const held = outcome(client.call("hold", { n: 1 }, { timeout: 0 }));
    const read = outcome(client.call("read", { n: 2 }, { timeout: 0 }));
    await harness.held(2);
    harness.holdReads = false;
    const reconnected = once(client, "connect");
    await drop(harness);
    expect(await held).toBeInstanceOf(ConnectionClosedError);
    // idempotent, but retries are opt-in
    expect(await read).toBeInstanceOf(ConnectionClosedError);
    await reconnected;
    expect(await client.call("echo", { n: 3 })).toBe(3);
    expect(harness.seen.get("hold")).toEqual([1]);
    expect(harness.seen.get("read")).toEqual([2]);
  });

  it("idempotentRetries resends an in-flight call of an idempotent method, and only those", async () => {
    const harness = await startServer(address);
    const client = await openClient(address, {
      reconnect: { ...fast, idempotentRetries: 2 },
    });
    harness.holdReads = true;
    const held = outcome(client.call("hold", { n: 1 }, { timeout: 0 }));
    const read = client.call("read", { n: 2 }, { timeout: 10_000 });
    await harness.held(2);
    harness.holdReads = false;
    await drop(harness);
    expect(await held).toBeInstanceOf(ConnectionClosedError);
    expect(await read).toBe(2);
    expect(harness.seen.get("read")).toEqual([2, 2]);
    expect(harness.seen.get("hold")).toEqual([1]);
  });

  it("an authentication failure stops reconnecting with a clear error", async () => {
    const first = await startServer(address, "first", { authKey: "key one" });
    const client = await openClient(address, { authKey: "key one", reconnect: fast });
    // The server registers the connection once it read the client's #WELCOME#.
    await until(() => first.server.connections.length === 1);
    const attempts: ReconnectAttempt[] = [];
    client.on("reconnecting", (attempt) => attempts.push(attempt));
    await first.server.close();
    const waiting = outcome(client.call("echo", { n: 1 }, { timeout: 10_000 }));
    const closed = once(client, "close") as Promise<[Error]>;
    await startServer(address, "second", { authKey: "key two" });
    const [reason] = await closed;
    expect(reason).toBeInstanceOf(AuthenticationError);
    expect(client.state).toBe("closed");
    const error = await waiting;
    expect(error).toBeInstanceOf(ConnectionClosedError);
    expect((error as Error).cause).toBe(reason);
    expect((error as Error).message).toMatch(/stopped reconnecting.*authentication failed/);
    await expect(client.call("echo", { n: 2 })).rejects.toMatchObject({ cause: reason });
    const count = attempts.length;
    expect(count).toBeGreaterThan(0);
    // No further attempts once the verdict is in.
    expect(client.state).toBe("closed");
    expect(attempts).toHaveLength(count);
  });

  it("client handlers are in place on every new connection", async () => {
    const harness = await startServer(address);
    const client = await openClient(address, { reconnect: fast });
    const ask = () => harness.server.connections[0]!.peer.call("hello", { from: "server" });
    expect(await ask()).toBe("hello server");
    const reconnected = once(client, "connect");
    await drop(harness);
    await reconnected;
    await until(() => harness.server.connections.length === 1);
    expect(await ask()).toBe("hello server");
  });

  it("a stream in progress ends with ConnectionClosedError on a drop; a new stream works after reconnecting", async () => {
    const harness = await startServer(address);
    const client = await openClient(address, { reconnect: fast });
    const items: number[] = [];
    const reconnected = once(client, "connect");
    const consumed = (async () => {
      for await (const item of client.stream("ticks", { count: 3, hang: true })) {
        items.push(item);
        if (items.length === 3) void drop(harness);
      }
    })();
    await expect(consumed).rejects.toBeInstanceOf(ConnectionClosedError);
    expect(items).toEqual([0, 1, 2]);
    await reconnected;
    const again: number[] = [];
    for await (const item of client.stream("ticks", { count: 4, hang: false })) again.push(item);
    expect(again).toEqual([0, 1, 2, 3]);
  });

  it("a stream opened while disconnected starts once the connection is back", async () => {
    const first = await startServer(address);
    const client = await openClient(address, { reconnect: fast });
    await first.server.close();
    const iterator = client.stream("ticks", { count: 2, hang: false })[Symbol.asyncIterator]();
    const next = iterator.next();
    await startServer(address);
    expect(await next).toEqual({ value: 0, done: false });
    expect(await iterator.next()).toEqual({ value: 1, done: false });
    expect(await iterator.next()).toEqual({ value: undefined, done: true });
  });

  it("maxQueuedCalls bounds the calls waiting for a connection", async () => {
    const first = await startServer(address);
    const client = await openClient(address, { reconnect: { ...fast, maxQueuedCalls: 3 } });
    await first.server.close();
    const waiting = range(3).map((n) => outcome(client.call("echo", { n }, { timeout: 10_000 })));
    const error = await outcome(client.call("echo", { n: 9 }));
    expect(error).toBeInstanceOf(ConnectionClosedError);
    expect((error as Error).message).toMatch(/maxQueuedCalls/);
    await client.close();
    for (const w of await Promise.all(waiting)) expect(w).toBeInstanceOf(ConnectionClosedError);
  });

  it("backs off between failed attempts (gRPC algorithm) and gives up after maxAttempts", async () => {
    const first = await startServer(address);
    const client = await openClient(address, {
      reconnect: { initialDelay: 100, multiplier: 2, jitter: 0, maxAttempts: 3 },
    });
    const attempts: ReconnectAttempt[] = [];
    client.on("reconnecting", (attempt) => attempts.push(attempt));
    const waiting = outcome(client.call("echo", { n: 1 }, { timeout: 0 }));
    const closed = once(client, "close") as Promise<[Error]>;
    await first.server.close();
    const [reason] = await closed;
    expect(attempts.map((a) => a.attempt)).toEqual([1, 2, 3]);
    // Each delay counts from the start of the failed attempt: the nominal 100, 200, 400 ms
    // (after an immediate first attempt) less the few ms the attempt took.
    const [, ...later] = attempts.map((a) => a.delay);
    for (const [i, delay] of later.entries()) {
      const nominal = 100 * 2 ** (attempts[0]!.delay === 0 ? i : i + 1);
      expect(delay).toBeLessThanOrEqual(nominal);
      expect(delay).toBeGreaterThan(nominal - 50);
    }
    for (const a of attempts.slice(1)) expect(a.error).toBeInstanceOf(ConnectionClosedError);
    expect(reason).toBeInstanceOf(ConnectionClosedError);
    expect(reason.message).toMatch(/after 3 attempts/);
    expect(client.state).toBe("closed");
    expect(await waiting).toBeInstanceOf(ConnectionClosedError);
  });

  it("close() while reconnecting stops the attempts and rejects the waiting calls", async () => {
    const first = await startServer(address);
    // The connection dies young: the next attempt is a whole backoff (60 s) away.
    const client = await openClient(address, { reconnect: { initialDelay: 60_000 } });
    const states: ClientState[] = [];
    client.on("state", (state) => states.push(state));
    await first.server.close();
    expect(client.state).toBe("reconnecting");
    const waiting = outcome(client.call("echo", { n: 1 }, { timeout: 0 }));
    const closed = once(client, "close");
    await client.close();
    expect(await closed).toEqual([undefined]);
    const error = await waiting;
    expect(error).toBeInstanceOf(ConnectionClosedError);
    expect((error as Error).message).toMatch(/client is closed/);
    expect(client.state).toBe("closed");
    expect(states).toEqual(["reconnecting", "closed"]);
    await startServer(address);
    // A server is back, but the closed client stays closed.
    await expect(client.call("echo", { n: 2 })).rejects.toBeInstanceOf(ConnectionClosedError);
  });

  it("after rpc.goaway, new calls go to the next connection while in-flight ones finish on the old", async () => {
    const first = await startServer(address, "first");
    const client = await openClient(address, { reconnect: fast });
    const goaway = once(client, "goaway");
    const inFlight = client.call("hold", { n: 1 }, { timeout: 0 });
    await first.held(1);
    const closing = first.server.close({ timeout: 10_000 });
    expect(await goaway).toEqual(["server is shutting down"]);
    const next = client.call("whoami");
    const reconnected = once(client, "connect");
    await startServer(address, "second");
    await reconnected;
    expect(await next).toBe("second");
    first.release(1, 11);
    expect(await inFlight).toBe(11);
    await closing;
    expect(first.runs.get("whoami")).toBeUndefined();
  });

  it("refuses a goaway'd connection's calls with -32005 when reconnect is off", async () => {
    const first = await startServer(address, "first");
    const client = await openClient(address);
    // A call with a timeout carries ezipc's metadata: the server now knows this client
    // speaks ezipc, and will tell it of its shutdown.
    expect(await client.call("echo", { n: 0 })).toBe(0);
    const goaway = once(client, "goaway");
    const inFlight = client.call("hold", { n: 1 }, { timeout: 0 });
    await first.held(1);
    const closing = first.server.close({ timeout: 10_000 });
    await goaway;
    await expect(client.call("echo", { n: 2 })).rejects.toMatchObject({
      code: ErrorCodes.ShuttingDown,
    });
    first.release(1, 11);
    expect(await inFlight).toBe(11);
    await closing;
    expect(first.seen.get("echo")).toEqual([0]);
  });
});

describe("calls refused by a server that is going away (-32005)", () => {
  /**
   * A hand-written server: on its first connection it answers the first request with
   * `rpc.goaway` (when `goaway`) and -32005, as a draining server does; later connections
   * answer `echo` normally. Records each request it saw.
   */
  async function refusingServer(goaway: boolean) {
    const seen: { connection: number; id: unknown; method: string }[] = [];
    let connections = 0;
    const server = createNetServer((socket) => {
      const connection = ++connections;
      let buffer = Buffer.alloc(0);
      const send = (message: unknown) => {
        const body = Buffer.from(JSON.stringify(message));
        const header = Buffer.alloc(4);
        header.writeUInt32BE(body.length);
        socket.write(Buffer.concat([header, body]));
      };
      socket.on("error", () => {});
      socket.on("data", (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk]);
        while (buffer.length >= 4 && buffer.length >= 4 + buffer.readUInt32BE(0)) {
          const size = buffer.readUInt32BE(0);
          const message = JSON.parse(buffer.subarray(4, 4 + size).toString());
          buffer = buffer.subarray(4 + size);
          if (message.id === undefined) continue;
          if (message.method === "rpc.ping") {
            send({ jsonrpc: "2.0", id: message.id, result: "pong" });
            continue;
          }
          seen.push({ connection, id: message.id, method: message.method });
          if (connection === 1) {
            if (goaway) send({ jsonrpc: "2.0", method: "rpc.goaway", params: { reason: "bye" } });
            send({
              jsonrpc: "2.0",
              id: message.id,
              error: { code: ErrorCodes.ShuttingDown, message: "Server is shutting down" },
            });
          } else {
            send({ jsonrpc: "2.0", id: message.id, result: message.params.n });
          }
        }
      });
    });
    server.listen(address.slice("unix:".length));
    await once(server, "listening");
    return { seen, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  }

  it("a call refused after rpc.goaway never ran: a reconnecting client sends it to the next connection", async () => {
    const fake = await refusingServer(true);
    try {
      const client = await openClient(address, { reconnect: fast, heartbeat: false });
      expect(await client.call("echo", { n: 9 })).toBe(9);
      expect(fake.seen.map((s) => s.connection)).toEqual([1, 2]);
      await client.close();
    } finally {
      await fake.close();
    }
  });

  it("a -32005 without rpc.goaway is the server's answer: it reaches the caller", async () => {
    const fake = await refusingServer(false);
    try {
      const client = await openClient(address, { reconnect: fast, heartbeat: false });
      await expect(client.call("echo", { n: 9 })).rejects.toMatchObject({
        code: ErrorCodes.ShuttingDown,
      });
      expect(fake.seen).toHaveLength(1);
      await client.close();
    } finally {
      await fake.close();
    }
  });
});

/** Resolves once `check()` holds, re-checking on each turn of the event loop. */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((resolve) => setImmediate(resolve));
}
