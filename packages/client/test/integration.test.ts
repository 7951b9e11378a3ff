import { once } from "node:events";
import { mkdtempSync, renameSync, rmSync, statSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AbortError,
  ConnectionClosedError,
  connect,
  createServer,
  defineContract,
  ErrorCodes,
  type Handlers,
  method,
  notification,
  RpcError,
  TimeoutError,
  ValidationError,
} from "ezipc";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { z } from "zod";

const contract = defineContract({
  server: {
    add: method({ params: z.object({ a: z.number(), b: z.number() }), result: z.number() }),
    divide: method({ params: z.tuple([z.number(), z.number()]), result: z.number() }),
    wait: method({ params: z.object({ key: z.string() }), result: z.string() }),
    log: notification({ params: z.object({ line: z.string() }) }),
  },
});

/** The same server half plus a method the server does not implement. */
const newerContract = defineContract({
  server: { ...contract.server, missing: method({ result: z.string() }) },
});

type ServerSide = typeof contract.server;

/** A promise with its resolve exposed. */
function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Resolves with the abort reason once `signal` aborts. */
function aborted(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(signal.reason), { once: true }),
  );
}

/** What the server's handlers saw, and the levers the test holds over them. */
interface Probe {
  lines: string[];
  logged: ReturnType<typeof deferred<string>>;
  /** Each `wait` handler's signal, by key, as it starts. */
  started: Map<string, ReturnType<typeof deferred<AbortSignal>>>;
  release: Map<string, (value: string) => void>;
  transports: string[];
}

function waitStarted(probe: Probe, key: string) {
  let entry = probe.started.get(key);
  if (entry === undefined) {
    entry = deferred<AbortSignal>();
    probe.started.set(key, entry);
  }
  return entry;
}

function handlersFor(probe: Probe): Handlers<ServerSide> {
  return {
    add: ({ a, b }) => a + b,
    divide: ([a, b]) => {
      if (b === 0) throw new RpcError(-32010, "Division by zero", { a });
      return a / b;
    },
    wait: ({ key }, ctx) => {
      waitStarted(probe, key).resolve(ctx.signal);
      return new Promise<string>((resolve, reject) => {
        probe.release.set(key, resolve);
        ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
      });
    },
    log: ({ line }, ctx) => {
      probe.lines.push(line);
      probe.transports.push(ctx.connection.transport);
      probe.logged.resolve(line);
    },
  };
}

function newProbe(): Probe {
  return {
    lines: [],
    logged: deferred<string>(),
    started: new Map(),
    release: new Map(),
    transports: [],
  };
}

let dir: string;
/** What afterEach needs of a server and a client (kept structural, not tied to generics). */
interface OpenServer {
  readonly connections: readonly unknown[];
  close(options?: { timeout?: number }): Promise<void>;
}
interface OpenClient {
  readonly pendingCount: number;
  close(): Promise<void>;
}
const servers: OpenServer[] = [];
const clients: OpenClient[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "ezipc-it-"));
});

afterEach(async () => {
  vi.useRealTimers();
  const openClients = clients.splice(0);
  const openServers = servers.splice(0);
  try {
    for (const client of openClients) expect(client.pendingCount).toBe(0);
    await Promise.all(openClients.map((client) => client.close()));
    for (const server of openServers) {
      await vi.waitFor(() => expect(server.connections.length).toBe(0));
    }
  } finally {
    await Promise.all(openClients.map((client) => client.close()));
    await Promise.all(openServers.map((server) => server.close({ timeout: 0 })));
    rmSync(dir, { recursive: true, force: true });
  }
});

async function startServer(address: string, probe = newProbe()) {
  const server = createServer(contract, handlersFor(probe));
  servers.push(server);
  await server.listen(address);
  return { server, probe };
}

async function connectTo(server: { readonly address: string }, timeout?: number) {
  const client = await connect(contract, server.address, {
    ...(timeout !== undefined && { timeout }),
  });
  clients.push(client);
  return client;
}

const transports = [
  { kind: "unix", address: () => `unix:${join(dir, "rpc.sock")}` },
  { kind: "tcp", address: () => "tcp://127.0.0.1:0" },
];

describe.each(transports)("over $kind", ({ kind, address }) => {
  it("round-trips typed calls, by name and by position, and their errors", async () => {
    const { server } = await startServer(address());
    const client = await connectTo(server);
    await expect(client.call("add", { a: 2, b: 3 })).resolves.toBe(5);
    await expect(client.call("divide", [9, 3])).resolves.toBe(3);
    const failed = client.call("divide", [1, 0]);
    await expect(failed).rejects.toBeInstanceOf(RpcError);
    await expect(failed).rejects.toMatchObject({ code: -32010, data: { a: 1 } });
    await expect(
      client.call("add", { a: 1, b: "2" } as unknown as { a: number; b: number }),
    ).rejects.toBeInstanceOf(ValidationError);
    if (kind === "tcp") expect(server.address).toMatch(/^tcp:\/\/127\.0\.0\.1:[1-9]\d*$/);
    else expect(server.address).toBe(address());
  });

  it("answers a method the server does not implement with -32601", async () => {
    const { server } = await startServer(address());
    const client = await connect(newerContract, server.address);
    clients.push(client);
    await expect(client.call("missing")).rejects.toMatchObject({ code: ErrorCodes.MethodNotFound });
    await expect(client.call("add", { a: 1, b: 1 })).resolves.toBe(2);
  });

  it("resolves 1,000 pipelined calls, each with its own result", async () => {
    const { server } = await startServer(address());
    const client = await connectTo(server);
    const calls = Array.from({ length: 1_000 }, (_, i) =>
      client.call("add", { a: i, b: i * 1_000 }),
    );
    expect(client.pendingCount).toBe(1_000);
    const results = await Promise.all(calls);
    expect(results).toEqual(Array.from({ length: 1_000 }, (_, i) => i * 1_001));
  });

  it("delivers a notification to the server's handler", async () => {
    const { server, probe } = await startServer(address());
    const client = await connectTo(server);
    await expect(client.notify("log", { line: "hello" })).resolves.toBeUndefined();
    await expect(probe.logged.promise).resolves.toBe("hello");
    expect(probe.transports).toEqual([kind]);
  });

  it("rejects pending calls with ConnectionClosedError when the server closes, and later calls at once", async () => {
    const { server, probe } = await startServer(address());
    const client = await connectTo(server, 0);
    const closed = once(client, "close");
    const calls = ["a", "b", "c"].map((key) => client.call("wait", { key }));
    const signals = await Promise.all(
      ["a", "b", "c"].map((key) => waitStarted(probe, key).promise),
    );
    const outcomes = calls.map((call) =>
      expect(call).rejects.toBeInstanceOf(ConnectionClosedError),
    );
    await server.close({ timeout: 0 });
    await Promise.all(outcomes);
    for (const reason of await Promise.all(signals.map(aborted))) {
      expect(reason).toBeInstanceOf(ConnectionClosedError);
    }
    await closed;
    expect(client.closed).toBe(true);
    expect(client.pendingCount).toBe(0);
    await expect(client.call("add", { a: 1, b: 2 })).rejects.toBeInstanceOf(ConnectionClosedError);
    await expect(client.notify("log", { line: "x" })).rejects.toBeInstanceOf(ConnectionClosedError);
    expect(server.connections).toHaveLength(0);
  });

  it("lets an in-flight call finish during a graceful close", async () => {
    const { server, probe } = await startServer(address());
    const client = await connectTo(server, 0);
    const call = client.call("wait", { key: "slow" });
    await waitStarted(probe, "slow").promise;
    const closing = server.close();
    probe.release.get("slow")!("finished");
    await expect(call).resolves.toBe("finished");
    await closing;
    expect(server.listening).toBe(false);
  });

  it("sends rpc.cancel on a timeout so the server handler's ctx.signal aborts", async () => {
    const { server, probe } = await startServer(address());
    const client = await connectTo(server);
    // Only the clock is faked (timers and Date.now, which deadlines are measured on):
    // socket I/O, setImmediate and process.nextTick stay real.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const call = client.call("wait", { key: "slow" }, { timeout: 50 });
    const outcome = expect(call).rejects.toBeInstanceOf(TimeoutError);
    const signal = await waitStarted(probe, "slow").promise;
    expect(signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(50);
    await outcome;
    await expect(call).rejects.toMatchObject({ timeout: 50 });
    // The deadline travels with the request, so the handler's signal aborts at the deadline
    // (-32002) or on the caller's rpc.cancel (-32000), whichever comes first.
    const reason = (await aborted(signal)) as { code: number };
    expect([ErrorCodes.RequestCancelled, ErrorCodes.DeadlineExceeded]).toContain(reason.code);
    vi.useRealTimers();
    expect(client.pendingCount).toBe(0);
    await vi.waitFor(() => expect(server.connections[0]?.runningCount).toBe(0));
    // The connection outlives the cancelled call.
    await expect(client.call("add", { a: 1, b: 1 })).resolves.toBe(2);
  });

  it("sends rpc.cancel when the caller's signal aborts, and the handler's ctx.signal aborts", async () => {
    const { server, probe } = await startServer(address());
    const client = await connectTo(server, 0);
    const controller = new AbortController();
    const call = client.call("wait", { key: "abort" }, { signal: controller.signal });
    const outcome = expect(call).rejects.toBeInstanceOf(AbortError);
    const signal = await waitStarted(probe, "abort").promise;
    controller.abort();
    await outcome;
    // No deadline travelled with this call: only the caller's rpc.cancel can abort it.
    await expect(aborted(signal)).resolves.toMatchObject({ code: ErrorCodes.RequestCancelled });
    await vi.waitFor(() => expect(server.connections[0]?.runningCount).toBe(0));
    await expect(client.call("add", { a: 2, b: 2 })).resolves.toBe(4);
  });
});

describe("Unix socket files", () => {
  it("creates the socket owner-only (0600)", async () => {
    const path = join(dir, "mode.sock");
    await startServer(`unix:${path}`);
    expect(statSync(path).isSocket()).toBe(true);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it("replaces a stale socket file nobody listens on", async () => {
    const path = join(dir, "stale.sock");
    // Leave a socket file with no listener behind: bind elsewhere, move the file, close.
    const net = createNetServer();
    const bound = join(dir, "bound.sock");
    await new Promise<void>((resolve) => net.listen(bound, resolve));
    renameSync(bound, path);
    await new Promise<void>((resolve) => net.close(() => resolve()));
    expect(statSync(path).isSocket()).toBe(true);

    const { server } = await startServer(`unix:${path}`);
    const client = await connectTo(server);
    await expect(client.call("add", { a: 20, b: 22 })).resolves.toBe(42);
  });

  it("refuses a socket path someone listens on with EADDRINUSE, leaving that server alone", async () => {
    const path = join(dir, "live.sock");
    const { server: first } = await startServer(`unix:${path}`);
    const second = createServer(contract, handlersFor(newProbe()));
    await expect(second.listen(`unix:${path}`)).rejects.toMatchObject({ code: "EADDRINUSE" });
    expect(second.listening).toBe(false);
    const client = await connectTo(first);
    await expect(client.call("add", { a: 1, b: 2 })).resolves.toBe(3);
  });
});

describe("non-loopback addresses", () => {
  it("refuses tcp://0.0.0.0 without insecure: true, with an error naming the fix", async () => {
    const server = createServer(contract, handlersFor(newProbe()));
    servers.push(server);
    const refused = server.listen("tcp://0.0.0.0:0");
    await expect(refused).rejects.toBeInstanceOf(Error);
    await expect(refused).rejects.toThrow(/insecure: true/);
    expect(server.listening).toBe(false);
  });

  it("listens on tcp://0.0.0.0 with insecure: true", async () => {
    const server = createServer(contract, handlersFor(newProbe()), { insecure: true });
    servers.push(server);
    await server.listen("tcp://0.0.0.0:0");
    expect(server.listening).toBe(true);
    expect(server.address).toMatch(/^tcp:\/\/0\.0\.0\.0:[1-9]\d*$/);
    await server.close();
    expect(server.listening).toBe(false);
  });
});
