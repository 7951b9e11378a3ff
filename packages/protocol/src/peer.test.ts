import {
  AbortError,
  ConnectionClosedError,
  type ConnectionInfo,
  defineContract,
  ErrorCodes,
  type Handlers,
  method,
  notification,
  type RemoteApi,
  RpcError,
  TimeoutError,
  ValidationError,
} from "@ezipc/contract";
import { afterEach, describe, expect, it, vi } from "vitest";
import { z } from "zod";
import { createDispatchTable, createRemoteTable } from "./dispatch.js";
import { createMemoryTransportPair } from "./memory-transport.js";
import { type ErrorReport, Peer } from "./peer.js";
import type { Transport } from "./transport.js";

// Captured before any test installs fake timers: flushing must not depend on the fake clock.
const realSetImmediate = setImmediate;
/** Lets every queued microtask (memory-transport deliveries, handler continuations) run. */
const settle = () => new Promise<void>((resolve) => realSetImmediate(resolve));

const isoDate = z.codec(z.iso.datetime(), z.date(), {
  decode: (text) => new Date(text),
  encode: (date) => date.toISOString(),
});

const contract = defineContract({
  server: {
    add: method({ params: z.object({ a: z.number(), b: z.number() }), result: z.number() }),
    subtract: method({ params: z.tuple([z.number(), z.number()]), result: z.number() }),
    echo: method({
      params: z.object({ text: z.string() }),
      result: z.object({ text: z.string() }),
    }),
    hello: method({ result: z.literal("hi") }),
    fail: method({ params: z.object({ how: z.enum(["rpc", "plain"]) }) }),
    wait: method({ params: z.object({ key: z.string() }), result: z.string() }),
    claim: method({
      params: z.object({ name: z.string() }).refine(async ({ name }) => name !== "taken", {
        message: "name is taken",
      }),
      result: z.string().refine(async (s) => s.startsWith("ok:"), { message: "not ok" }),
    }),
    schedule: method({
      params: z.object({ at: isoDate }),
      result: z.object({ year: z.number(), next: isoDate }),
    }),
    parse: method({
      params: z.object({
        json: z.string().transform((text) => JSON.parse(text) as unknown),
      }),
      result: z.string().transform((text) => JSON.parse(text) as unknown),
    }),
    log: notification({ params: z.object({ line: z.string() }) }),
    linger: notification({ params: z.object({ key: z.string() }) }),
    touch: notification(),
  },
  client: {
    progress: notification({ params: z.object({ pct: z.number() }) }),
    confirm: method({ params: z.object({ question: z.string() }), result: z.boolean() }),
  },
});

type ServerSide = typeof contract.server;
type ClientSide = typeof contract.client;

/** A promise with its resolve exposed, for handlers the test releases. */
function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Resolves with the handler's `ctx.signal` the first time it aborts (or at once if aborted). */
function aborted(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(signal.reason), { once: true }),
  );
}

function connectionInfo(id: string): ConnectionInfo {
  return { id, transport: "memory", remoteAddress: "memory", authenticated: false };
}

/** Every JSON message a transport sent, parsed. */
function sentMessages(transport: { readonly sent: Uint8Array[] }): any[] {
  return transport.sent.map((bytes) => JSON.parse(new TextDecoder().decode(bytes)));
}

function cancelsSent(transport: { readonly sent: Uint8Array[] }): unknown[] {
  return sentMessages(transport)
    .filter((m) => m.method === "rpc.cancel")
    .map((m) => m.params.id);
}

function requestIdOf(transport: { readonly sent: Uint8Array[] }, name: string): string | number {
  const request = sentMessages(transport).find((m) => m.method === name && "id" in m);
  if (request === undefined) throw new Error(`no request for ${name} was sent`);
  return request.id;
}

const encoder = new TextEncoder();
const frame = (message: unknown) => encoder.encode(JSON.stringify(message));

/** State the default handlers share with a test. */
interface Probe {
  /** Resolved with `ctx.signal` and the key each time `wait` or `linger` starts. */
  started: (signal: AbortSignal, key: string) => void;
  /** Releases the `wait` handler of `key` with a value. */
  release: Map<string, (value: string) => void>;
  logs: string[];
  calls: Map<string, number>;
}

const peers: Peer[] = [];

afterEach(async () => {
  vi.useRealTimers();
  await settle();
  const open = peers.splice(0);
  try {
    for (const peer of open) {
      expect(peer.pendingCount).toBe(0);
      expect(peer.runningCount).toBe(0);
    }
  } finally {
    for (const peer of open) peer.close();
    await settle();
  }
});

interface SetupOptions {
  server?: Partial<Handlers<ServerSide, ClientSide>>;
  client?: Partial<Handlers<ClientSide, ServerSide>>;
  serverValidate?: boolean;
  callerValidate?: boolean;
  timeout?: number;
}

/** Two peers over an in-memory pair: `callee` serves the server half, `caller` the client half. */
function setup(options: SetupOptions = {}) {
  const [callerTransport, calleeTransport] = createMemoryTransportPair();
  const probe: Probe = {
    started: () => {},
    release: new Map(),
    logs: [],
    calls: new Map(),
  };
  const count = (name: string) => probe.calls.set(name, (probe.calls.get(name) ?? 0) + 1);
  const serverHandlers: Handlers<ServerSide, ClientSide> = {
    add: ({ a, b }) => a + b,
    subtract: ([a, b]) => a - b,
    echo: (params) => params,
    hello: () => "hi" as const,
    fail: ({ how }) => {
      if (how === "rpc")
        throw new RpcError(ErrorCodes.Unauthorized, "not yours", { file: "a.txt" });
      throw new Error("secret internal detail");
    },
    wait: ({ key }, ctx) => {
      count("wait");
      probe.started(ctx.signal, key);
      return new Promise<string>((resolve, reject) => {
        probe.release.set(key, resolve);
        ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
      });
    },
    claim: async ({ name }) => `ok:${name}`,
    schedule: ({ at }) => {
      expect(at).toBeInstanceOf(Date);
      return { year: at.getUTCFullYear(), next: new Date(at.getTime() + 86_400_000).toISOString() };
    },
    parse: ({ json }) => JSON.stringify(json),
    log: ({ line }) => {
      probe.logs.push(line);
    },
    linger: ({ key }, ctx) => {
      probe.started(ctx.signal, key);
      return aborted(ctx.signal).then(() => {});
    },
    touch: () => {
      probe.logs.push("touched");
    },
    ...options.server,
  };
  const clientHandlers: Handlers<ClientSide, ServerSide> = {
    progress: ({ pct }) => {
      probe.logs.push(`progress ${pct}`);
    },
    confirm: ({ question }) => question.endsWith("?"),
    ...options.client,
  };
  const serverErrors = vi.fn<(error: unknown, report: ErrorReport) => void>();
  const clientErrors = vi.fn<(error: unknown, report: ErrorReport) => void>();
  const callee = new Peer({
    transport: calleeTransport,
    local: createDispatchTable(contract.server, serverHandlers),
    remote: createRemoteTable(contract.client),
    connection: connectionInfo("callee"),
    onError: serverErrors,
    ...(options.serverValidate !== undefined && { validate: options.serverValidate }),
  });
  const caller = new Peer({
    transport: callerTransport,
    local: createDispatchTable(contract.client, clientHandlers),
    remote: createRemoteTable(contract.server),
    connection: connectionInfo("caller"),
    onError: clientErrors,
    ...(options.callerValidate !== undefined && { validate: options.callerValidate }),
    ...(options.timeout !== undefined && { timeout: options.timeout }),
  });
  peers.push(callee, caller);
  return {
    caller,
    callee,
    /** The caller, typed by the contract as a client would see it. */
    api: caller as unknown as RemoteApi<ServerSide>,
    /** The callee, typed as the server's `ctx.peer` would see it. */
    back: callee as unknown as RemoteApi<ClientSide>,
    callerTransport,
    calleeTransport,
    probe,
    serverErrors,
    clientErrors,
  };
}

/**
 * A peer whose other end the test plays by hand: it reads what the peer sent and writes
 * raw messages back, to send what a well-behaved peer never would.
 */
function setupRaw(overrides: Partial<Handlers<ServerSide, ClientSide>> = {}) {
  const [peerTransport, rawTransport] = createMemoryTransportPair();
  const received: any[] = [];
  rawTransport.start({
    frame: (payload) => received.push(JSON.parse(new TextDecoder().decode(payload))),
    close: () => {},
  });
  const errors = vi.fn<(error: unknown, report: ErrorReport) => void>();
  const serverHandlers: Handlers<ServerSide, ClientSide> = {
    add: ({ a, b }) => a + b,
    subtract: ([a, b]) => a - b,
    echo: (params) => params,
    hello: () => "hi" as const,
    fail: () => undefined,
    wait: () => "",
    claim: ({ name }) => `ok:${name}`,
    schedule: ({ at }) => ({ year: at.getUTCFullYear(), next: at.toISOString() }),
    parse: ({ json }) => JSON.stringify(json),
    log: () => {},
    linger: () => {},
    touch: () => {},
    ...overrides,
  };
  const peer = new Peer({
    transport: peerTransport,
    local: createDispatchTable(contract.server, serverHandlers),
    remote: createRemoteTable(contract.server),
    connection: connectionInfo("raw"),
    onError: errors,
    timeout: 0,
  });
  peers.push(peer);
  return { peer, peerTransport, rawTransport: rawTransport as Transport, received, errors };
}

describe("Peer calls", () => {
  it("calls a method with named params and resolves with the validated result", async () => {
    const { api } = setup();
    await expect(api.call("add", { a: 2, b: 3 })).resolves.toBe(5);
  });

  it("calls a method with positional params (a tuple schema)", async () => {
    const { api, callerTransport } = setup();
    await expect(api.call("subtract", [42, 23])).resolves.toBe(19);
    expect(sentMessages(callerTransport)[0]).toMatchObject({
      method: "subtract",
      params: [42, 23],
    });
  });

  it("calls a method without params: the request carries no params member", async () => {
    const { api, callerTransport } = setup();
    await expect(api.call("hello")).resolves.toBe("hi");
    expect(sentMessages(callerTransport)[0]).not.toHaveProperty("params");
  });

  it("calls back from server to client (both directions over one connection)", async () => {
    let answer: Promise<boolean> | undefined;
    const { api, probe } = setup({
      server: {
        echo: async (params, ctx) => {
          answer = ctx.peer.call("confirm", { question: `${params.text}?` });
          await ctx.peer.notify("progress", { pct: 50 });
          return { text: String(await answer) };
        },
      },
    });
    await expect(api.call("echo", { text: "sure" })).resolves.toEqual({ text: "true" });
    await expect(answer).resolves.toBe(true);
    expect(probe.logs).toEqual(["progress 50"]);
  });

  it("lets the serving side call the calling side directly", async () => {
    const { back } = setup();
    await expect(back.call("confirm", { question: "no question" })).resolves.toBe(false);
  });

  it("delivers notifications in both directions and resolves notify once written", async () => {
    const { api, back, probe, callerTransport } = setup();
    await expect(api.notify("log", { line: "one" })).resolves.toBeUndefined();
    await expect(api.notify("touch")).resolves.toBeUndefined();
    await expect(back.notify("progress", { pct: 100 })).resolves.toBeUndefined();
    await settle();
    expect(probe.logs).toEqual(["one", "touched", "progress 100"]);
    const sent = sentMessages(callerTransport);
    expect(sent[0]).toEqual({ jsonrpc: "2.0", method: "log", params: { line: "one" } });
    expect(sent[1]).toEqual({ jsonrpc: "2.0", method: "touch" });
  });

  it("rejects a call of a name that is not a method of the other side, sending nothing", async () => {
    const { caller, callerTransport } = setup();
    await expect(caller.call("nope")).rejects.toBeInstanceOf(TypeError);
    await expect(caller.call("log", { line: "x" })).rejects.toBeInstanceOf(TypeError);
    await expect(caller.notify("add", { a: 1, b: 2 })).rejects.toBeInstanceOf(TypeError);
    expect(callerTransport.sent).toHaveLength(0);
  });
});

describe("Peer: which peers speak ezipc", () => {
  it.each([
    ["a plain JSON-RPC request", { jsonrpc: "2.0", id: 1, method: "hello" }, false],
    ["a plain notification", { jsonrpc: "2.0", method: "log", params: { line: "x" } }, false],
    [
      "a request with the ezipc member",
      { jsonrpc: "2.0", id: 1, method: "hello", ezipc: { timeout: 1000 } },
      true,
    ],
    ["rpc.ping", { jsonrpc: "2.0", id: 1, method: "rpc.ping" }, true],
    [
      "an rpc.cancel notification",
      { jsonrpc: "2.0", method: "rpc.cancel", params: { id: 9 } },
      true,
    ],
  ])("after %s: speaksEzipc is %s", async (_name, message, expected) => {
    const { peer, rawTransport } = setupRaw();
    expect(peer.speaksEzipc).toBe(false);
    rawTransport.send(JSON.stringify(message));
    await settle();
    expect(peer.speaksEzipc).toBe(expected);
  });

  it("an ezipc caller is recognised from its first call", async () => {
    const { api, callee, caller } = setup();
    await api.call("hello");
    expect(callee.speaksEzipc).toBe(true);
    // The caller has heard only a response: nothing shows the callee speaks ezipc yet.
    expect(caller.speaksEzipc).toBe(false);
  });
});

describe("Peer: request ids", () => {
  it('takes 1 and "1" for two calls: each gets its own answer, and a cancel reaches only its own', async () => {
    const release = new Map<string, (value: string) => void>();
    const aborts: string[] = [];
    const { rawTransport, received } = setupRaw({
      wait: ({ key }, ctx) =>
        new Promise<string>((resolve, reject) => {
          release.set(key, resolve);
          ctx.signal.addEventListener(
            "abort",
            () => {
              aborts.push(key);
              reject(ctx.signal.reason);
            },
            { once: true },
          );
        }),
    });
    rawTransport.send(
      JSON.stringify({ jsonrpc: "2.0", id: 1, method: "wait", params: { key: "number" } }),
    );
    rawTransport.send(
      JSON.stringify({ jsonrpc: "2.0", id: "1", method: "wait", params: { key: "string" } }),
    );
    await settle();
    expect([...release.keys()].sort()).toEqual(["number", "string"]);
    rawTransport.send(
      JSON.stringify({ jsonrpc: "2.0", method: "rpc.cancel", params: { id: "1" } }),
    );
    await settle();
    expect(aborts).toEqual(["string"]);
    release.get("number")!("done");
    await settle();
    expect(received).toContainEqual({ jsonrpc: "2.0", result: "done", id: 1 });
    // The cancelled call is answered too (with an error), under its own id.
    const answers = received.filter((m) => "id" in m);
    expect(answers).toHaveLength(2);
    expect(answers.map((m) => m.id)).toEqual(expect.arrayContaining([1, "1"]));
    expect(answers.find((m) => m.id === "1")).toHaveProperty("error");
  });

  it('matches a response to our call 1 only by the number: an answer with id "1" is not ours', async () => {
    const { peer, rawTransport, received } = setupRaw();
    const api = peer as unknown as RemoteApi<ServerSide>;
    const result = api.call("hello");
    await settle();
    const id = received.find((m) => m.method === "hello").id;
    expect(typeof id).toBe("number");
    rawTransport.send(JSON.stringify({ jsonrpc: "2.0", result: "hi", id: String(id) }));
    await settle();
    // Dropped like any answer to a call we do not have (a late one after a timeout).
    expect(peer.pendingCount).toBe(1);
    rawTransport.send(JSON.stringify({ jsonrpc: "2.0", result: "hi", id }));
    await expect(result).resolves.toBe("hi");
  });
});

describe("Peer validation", () => {
  it("rejects bad local params with ValidationError and sends nothing", async () => {
    const { caller, callerTransport } = setup();
    const wrongType = caller.call("add", { a: "1", b: 2 });
    await expect(wrongType).rejects.toBeInstanceOf(ValidationError);
    await expect(wrongType).rejects.toMatchObject({
      target: "params",
      issues: [expect.objectContaining({ path: ["a"] })],
    });
    await expect(caller.call("add", { a: 1 })).rejects.toMatchObject({ target: "params" });
    await expect(caller.call("subtract", [1])).rejects.toBeInstanceOf(ValidationError);
    await expect(caller.call("hello", { unexpected: true })).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(caller.notify("log", { line: 7 })).rejects.toBeInstanceOf(ValidationError);
    await settle();
    expect(callerTransport.sent).toHaveLength(0);
  });

  it("rejects a result that does not match the contract with ValidationError (target result)", async () => {
    // The remote does not validate its own results, so the bad result reaches the wire.
    const { api } = setup({
      serverValidate: false,
      server: { add: () => "five" as unknown as number },
    });
    const call = api.call("add", { a: 2, b: 3 });
    await expect(call).rejects.toBeInstanceOf(ValidationError);
    await expect(call).rejects.toMatchObject({ target: "result" });
  });

  it("answers a handler's result that breaks the contract with -32603 and reports it", async () => {
    const { api, serverErrors } = setup({ server: { add: () => "five" as unknown as number } });
    await expect(api.call("add", { a: 2, b: 3 })).rejects.toMatchObject({
      code: ErrorCodes.InternalError,
    });
    expect(serverErrors).toHaveBeenCalledWith(
      expect.any(ValidationError),
      expect.objectContaining({ phase: "result", method: "add" }),
    );
  });

  it("answers params that fail the remote's schema with -32602 and zod's issues in data", async () => {
    const { api } = setup({ callerValidate: false });
    const call = api.call("add", { a: 1, b: "2" } as unknown as { a: number; b: number });
    await expect(call).rejects.toBeInstanceOf(RpcError);
    await expect(call).rejects.toMatchObject({
      code: ErrorCodes.InvalidParams,
      data: [expect.objectContaining({ path: ["b"], code: "invalid_type" })],
    });
  });

  it("runs async zod refinements on params and results, on both sides", async () => {
    const { api, caller, callerTransport } = setup();
    await expect(api.call("claim", { name: "free" })).resolves.toBe("ok:free");
    const sentBefore = callerTransport.sent.length;
    const taken = caller.call("claim", { name: "taken" });
    await expect(taken).rejects.toBeInstanceOf(ValidationError);
    await expect(taken).rejects.toMatchObject({
      target: "params",
      issues: [expect.objectContaining({ message: "name is taken" })],
    });
    expect(callerTransport.sent.length).toBe(sentBefore);
  });

  it("answers a failing async refinement on the receiving side with -32602", async () => {
    const { api } = setup({ callerValidate: false });
    await expect(api.call("claim", { name: "taken" })).rejects.toMatchObject({
      code: ErrorCodes.InvalidParams,
    });
  });

  it("rejects a result failing an async refinement with ValidationError", async () => {
    const { api } = setup({ serverValidate: false, server: { claim: () => "nope" } });
    const call = api.call("claim", { name: "free" });
    await expect(call).rejects.toBeInstanceOf(ValidationError);
    await expect(call).rejects.toMatchObject({ target: "result" });
  });

  it("sends a codec's input (ISO string) over the wire; the handler sees a Date and the caller gets one", async () => {
    let seen: unknown;
    const { api, callerTransport, calleeTransport } = setup({
      server: {
        schedule: ({ at }) => {
          seen = at;
          return { year: at.getUTCFullYear(), next: "2025-01-02T00:00:00.000Z" };
        },
      },
    });
    const result = await api.call("schedule", { at: "2025-01-01T00:00:00.000Z" });
    expect(seen).toBeInstanceOf(Date);
    expect((seen as Date).toISOString()).toBe("2025-01-01T00:00:00.000Z");
    expect(sentMessages(callerTransport)[0].params).toEqual({ at: "2025-01-01T00:00:00.000Z" });
    expect(sentMessages(calleeTransport)[0].result).toEqual({
      year: 2025,
      next: "2025-01-02T00:00:00.000Z",
    });
    expect(result.year).toBe(2025);
    expect(result.next).toBeInstanceOf(Date);
    expect(result.next.toISOString()).toBe("2025-01-02T00:00:00.000Z");
  });

  it("strips unknown keys from params and results of plain schemas, on the wire and for the handler", async () => {
    let seen: unknown;
    const { api, callerTransport, calleeTransport } = setup({
      server: {
        echo: (params) => {
          seen = params;
          return { text: params.text, internal: "do not leak" } as { text: string };
        },
      },
    });
    const params = { text: "hi", extra: "stripped" };
    await expect(api.call("echo", params)).resolves.toEqual({ text: "hi" });
    expect(sentMessages(callerTransport)[0].params).toEqual({ text: "hi" });
    expect(sentMessages(calleeTransport)[0].result).toEqual({ text: "hi" });
    expect(seen).toEqual({ text: "hi" });
  });

  it("strips unknown keys a remote sent before the handler sees them", async () => {
    let seen: unknown;
    const { api } = setup({
      callerValidate: false,
      server: {
        echo: (params) => {
          seen = params;
          return params;
        },
      },
    });
    await api.call("echo", { text: "hi", extra: 1 } as { text: string });
    expect(seen).toEqual({ text: "hi" });
  });
});

describe("Peer errors", () => {
  it("delivers an RpcError thrown by a handler with its code, message and data", async () => {
    const { api, serverErrors } = setup();
    const call = api.call("fail", { how: "rpc" });
    await expect(call).rejects.toBeInstanceOf(RpcError);
    await expect(call).rejects.toMatchObject({
      code: ErrorCodes.Unauthorized,
      message: "not yours",
      data: { file: "a.txt" },
    });
    expect(serverErrors).not.toHaveBeenCalled();
  });

  it("turns any other throw into -32603 without its message, and reports it to onError", async () => {
    const { api, serverErrors, calleeTransport } = setup();
    const call = api.call("fail", { how: "plain" });
    await expect(call).rejects.toBeInstanceOf(RpcError);
    await expect(call).rejects.toMatchObject({
      code: ErrorCodes.InternalError,
      message: "Internal error",
      data: undefined,
    });
    const wire = new TextDecoder().decode(calleeTransport.sent[0]);
    expect(wire).not.toContain("secret internal detail");
    expect(wire).not.toContain("stack");
    expect(serverErrors).toHaveBeenCalledTimes(1);
    expect(serverErrors).toHaveBeenCalledWith(
      expect.objectContaining({ message: "secret internal detail" }),
      expect.objectContaining({ phase: "handler", method: "fail" }),
    );
  });

  it("reports a throwing notification handler to onError and sends nothing back", async () => {
    const { api, serverErrors, calleeTransport } = setup({
      server: {
        log: () => {
          throw new Error("notification failed");
        },
      },
    });
    await api.notify("log", { line: "x" });
    await settle();
    expect(serverErrors).toHaveBeenCalledWith(
      expect.objectContaining({ message: "notification failed" }),
      expect.objectContaining({ phase: "handler", method: "log" }),
    );
    expect(calleeTransport.sent).toHaveLength(0);
  });

  it("answers a request for an unknown method with -32601, even for prototype names", async () => {
    const { peer, rawTransport, received } = setupRaw();
    for (const name of ["missing", "__proto__", "constructor", "toString"]) {
      rawTransport.send(JSON.stringify({ jsonrpc: "2.0", id: name, method: name }));
    }
    await settle();
    expect(received).toEqual(
      ["missing", "__proto__", "constructor", "toString"].map((id) => ({
        jsonrpc: "2.0",
        id,
        error: expect.objectContaining({ code: ErrorCodes.MethodNotFound }),
      })),
    );
    expect(peer.closed).toBe(false);
  });

  it("answers params whose schema throws while parsing with an error response, never a throw out of receive", async () => {
    // `parse` has a transform calling JSON.parse: bad input makes zod throw a SyntaxError.
    // Over a socket, a throw out of receive() is an uncaught exception in the server process.
    const { peer, received, errors } = setupRaw();
    expect(() =>
      peer.receive(frame({ jsonrpc: "2.0", id: 1, method: "parse", params: { json: "{" } })),
    ).not.toThrow();
    await settle();
    expect(received).toHaveLength(1);
    expect(received[0].id).toBe(1);
    expect([ErrorCodes.InvalidParams, ErrorCodes.InternalError]).toContain(received[0].error?.code);
    expect(errors).toHaveBeenCalled();
  });

  it("rejects a call whose result schema throws while parsing, instead of leaving it pending", async () => {
    const { peer, peerTransport, received } = setupRaw();
    const call = peer.call("parse", { json: "1" });
    call.catch(() => {});
    await settle();
    const id = requestIdOf(peerTransport, "parse");
    expect(received).toHaveLength(1);
    expect(() => peer.receive(frame({ jsonrpc: "2.0", id, result: "{" }))).not.toThrow();
    await settle();
    expect(peer.pendingCount).toBe(0);
    await expect(call).rejects.toBeInstanceOf(ValidationError);
    await expect(call).rejects.toMatchObject({ target: "result" });
  });
});

describe("Peer timeouts and cancellation", () => {
  it("rejects with TimeoutError after the timeout, sends rpc.cancel and aborts the handler's signal", async () => {
    vi.useFakeTimers();
    const { api, callerTransport, probe } = setup();
    const started = deferred<AbortSignal>();
    probe.started = (signal) => started.resolve(signal);
    const call = api.call("wait", { key: "slow" }, { timeout: 1_000 });
    const outcome = expect(call).rejects.toBeInstanceOf(TimeoutError);
    const signal = await started.promise;
    await vi.advanceTimersByTimeAsync(999);
    expect(signal.aborted).toBe(false);
    expect(cancelsSent(callerTransport)).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    await outcome;
    await expect(call).rejects.toMatchObject({ timeout: 1_000 });
    const reason = await aborted(signal);
    expect(reason).toMatchObject({ code: ErrorCodes.RequestCancelled });
    expect(cancelsSent(callerTransport)).toEqual([requestIdOf(callerTransport, "wait")]);
  });

  it("uses the peer's default timeout when the call gives none", async () => {
    vi.useFakeTimers();
    const { api, probe, callerTransport } = setup({ timeout: 5_000 });
    const started = deferred<AbortSignal>();
    probe.started = (signal) => started.resolve(signal);
    const call = api.call("wait", { key: "slow" });
    const outcome = expect(call).rejects.toMatchObject({ timeout: 5_000 });
    const signal = await started.promise;
    await vi.advanceTimersByTimeAsync(4_999);
    expect(signal.aborted).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await outcome;
    await expect(call).rejects.toBeInstanceOf(TimeoutError);
    await aborted(signal);
    expect(cancelsSent(callerTransport)).toHaveLength(1);
  });

  it("waits forever with timeout 0", async () => {
    vi.useFakeTimers();
    const { api, probe } = setup({ timeout: 10 });
    const started = deferred<AbortSignal>();
    probe.started = (signal) => started.resolve(signal);
    const call = api.call("wait", { key: "k" }, { timeout: 0 });
    await started.promise;
    await vi.advanceTimersByTimeAsync(24 * 3_600_000);
    probe.release.get("k")!("done");
    await expect(call).resolves.toBe("done");
  });

  it("rejects with AbortError when the signal aborts, sends rpc.cancel and aborts the handler", async () => {
    const { api, callerTransport, probe } = setup();
    const started = deferred<AbortSignal>();
    probe.started = (signal) => started.resolve(signal);
    const controller = new AbortController();
    const call = api.call("wait", { key: "a" }, { signal: controller.signal });
    const remoteSignal = await started.promise;
    controller.abort(new Error("user gave up"));
    await expect(call).rejects.toBeInstanceOf(AbortError);
    await expect(aborted(remoteSignal)).resolves.toMatchObject({
      code: ErrorCodes.RequestCancelled,
    });
    expect(cancelsSent(callerTransport)).toEqual([requestIdOf(callerTransport, "wait")]);
  });

  it("rejects at once with AbortError for an already aborted signal, sending nothing", async () => {
    const { api, callerTransport } = setup();
    const call = api.call("add", { a: 1, b: 2 }, { signal: AbortSignal.abort() });
    await expect(call).rejects.toBeInstanceOf(AbortError);
    await settle();
    expect(callerTransport.sent).toHaveLength(0);
  });

  it("drops a late result after a timeout: no unhandled rejection, nothing pending", async () => {
    vi.useFakeTimers();
    const unhandled = vi.fn();
    process.on("unhandledRejection", unhandled);
    try {
      const { peer, peerTransport, rawTransport, received } = setupRaw();
      const call = peer.call("add", { a: 1, b: 2 }, { timeout: 100 });
      const outcome = expect(call).rejects.toBeInstanceOf(TimeoutError);
      await vi.advanceTimersByTimeAsync(100);
      await outcome;
      const id = requestIdOf(peerTransport, "add");
      expect(received).toContainEqual({ jsonrpc: "2.0", method: "rpc.cancel", params: { id } });
      rawTransport.send(JSON.stringify({ jsonrpc: "2.0", id, result: 3 }));
      rawTransport.send(JSON.stringify({ jsonrpc: "2.0", id, result: "not even a number" }));
      await settle();
      await settle();
      expect(peer.pendingCount).toBe(0);
      expect(unhandled).not.toHaveBeenCalled();
      // The connection is still usable.
      const next = peer.call("add", { a: 2, b: 2 }, { timeout: 0 });
      await settle();
      rawTransport.send(JSON.stringify({ jsonrpc: "2.0", id: received.at(-1).id, result: 4 }));
      await expect(next).resolves.toBe(4);
    } finally {
      process.off("unhandledRejection", unhandled);
    }
  });

  it("settles every call exactly once, whatever happens to it", async () => {
    vi.useFakeTimers();
    const { api, caller, callerTransport, probe } = setup();
    const signals = new Map<string, AbortSignal>();
    probe.started = (signal, key) => signals.set(key, signal);
    const settled = new Map<string, string[]>();
    const track = (key: string, promise: Promise<unknown>) => {
      settled.set(key, []);
      promise.then(
        (value) => settled.get(key)!.push(`resolved ${String(value)}`),
        (error: Error) => settled.get(key)!.push(error.name),
      );
    };
    const controller = new AbortController();
    track("answered", api.call("wait", { key: "answered" }, { timeout: 1_000 }));
    track("timedOut", api.call("wait", { key: "timedOut" }, { timeout: 1_000 }));
    track("aborted", api.call("wait", { key: "aborted" }, { signal: controller.signal }));
    track("closed", api.call("wait", { key: "closed" }, { timeout: 0 }));
    track(
      "racing",
      api.call("wait", { key: "racing" }, { timeout: 1_000, signal: controller.signal }),
    );
    await settle();
    expect([...signals.keys()].sort()).toEqual([
      "aborted",
      "answered",
      "closed",
      "racing",
      "timedOut",
    ]);

    probe.release.get("answered")!("yes");
    await settle();
    await vi.advanceTimersByTimeAsync(1_000); // times out "timedOut" and "racing"
    controller.abort(); // aborts "aborted"; "racing" already timed out
    probe.release.get("timedOut")!("too late");
    probe.release.get("racing")!("too late");
    await settle();
    caller.close(); // rejects "closed"
    await settle();
    await settle();
    await vi.advanceTimersByTimeAsync(10_000);

    expect(Object.fromEntries(settled)).toEqual({
      answered: ["resolved yes"],
      timedOut: ["TimeoutError"],
      aborted: ["AbortError"],
      closed: ["ConnectionClosedError"],
      racing: ["TimeoutError"],
    });
    expect(probe.calls.get("wait")).toBe(5);
    // One rpc.cancel per abandoned call, never two for the same id.
    const cancels = cancelsSent(callerTransport);
    expect(cancels).toHaveLength(3);
    expect(new Set(cancels).size).toBe(3);
  });
});

describe("Peer connection loss", () => {
  it("rejects every pending call with ConnectionClosedError and aborts running handlers when the caller closes", async () => {
    const { api, caller, callee, probe } = setup();
    const signals: AbortSignal[] = [];
    probe.started = (signal) => signals.push(signal);
    const calls = ["a", "b", "c"].map((key) => api.call("wait", { key }, { timeout: 0 }));
    await settle();
    expect(caller.pendingCount).toBe(3);
    expect(callee.runningCount).toBe(3);
    const outcomes = calls.map((call) =>
      expect(call).rejects.toBeInstanceOf(ConnectionClosedError),
    );
    caller.close();
    await Promise.all(outcomes);
    const reasons = await Promise.all(signals.map(aborted));
    for (const reason of reasons) expect(reason).toBeInstanceOf(ConnectionClosedError);
    await settle();
    expect(caller.closed).toBe(true);
    expect(callee.closed).toBe(true);
  });

  it("rejects pending calls with ConnectionClosedError when the other side closes", async () => {
    const { api, callee, probe } = setup();
    const started = deferred<AbortSignal>();
    probe.started = (signal) => started.resolve(signal);
    const call = api.call("wait", { key: "a" }, { timeout: 0 });
    const signal = await started.promise;
    callee.close();
    await expect(call).rejects.toBeInstanceOf(ConnectionClosedError);
    await expect(aborted(signal)).resolves.toBeInstanceOf(ConnectionClosedError);
  });

  it("rejects calls and notifications made after the close at once, sending nothing", async () => {
    const { api, caller, callerTransport } = setup();
    caller.close();
    await settle();
    expect(caller.closed).toBe(true);
    await expect(api.call("add", { a: 1, b: 2 })).rejects.toBeInstanceOf(ConnectionClosedError);
    await expect(api.notify("log", { line: "x" })).rejects.toBeInstanceOf(ConnectionClosedError);
    expect(callerTransport.sent).toHaveLength(0);
  });

  it("aborts a running notification handler's signal when the connection is lost", async () => {
    const { api, caller, callee, probe } = setup();
    const started = deferred<AbortSignal>();
    probe.started = (signal) => started.resolve(signal);
    await api.notify("linger", { key: "n" });
    const signal = await started.promise;
    expect(callee.runningCount).toBe(1);
    caller.close();
    await settle();
    expect(callee.closed).toBe(true);
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBeInstanceOf(ConnectionClosedError);
    await settle();
  });

  it("aborts the signal of a handler whose async params check finished after the connection was lost", async () => {
    const gate = deferred();
    let signal: AbortSignal | undefined;
    // A params check that is still running when the connection goes away.
    const slowClaim = createDispatchTable(
      {
        wait: method({
          params: z.object({ key: z.string() }).refine(async () => {
            await gate.promise;
            return true;
          }),
          result: z.string(),
        }),
      },
      {
        wait: (_params: unknown, ctx: { signal: AbortSignal }) => {
          signal = ctx.signal;
          return aborted(ctx.signal).then(() => "aborted");
        },
      },
    );
    const [left, right] = createMemoryTransportPair();
    const server = new Peer({
      transport: right,
      local: slowClaim,
      remote: createRemoteTable({}),
      connection: connectionInfo("slow"),
    });
    const client = new Peer({
      transport: left,
      local: createDispatchTable({}, {}),
      remote: createRemoteTable(contract.server),
      connection: connectionInfo("slow-client"),
    });
    peers.push(server, client);
    const call = client.call("wait", { key: "x" }, { timeout: 0 });
    await settle();
    client.close();
    await expect(call).rejects.toBeInstanceOf(ConnectionClosedError);
    await settle();
    expect(server.closed).toBe(true);
    gate.resolve();
    await settle();
    // Either the handler never runs on a closed connection, or it sees its signal aborted.
    if (signal !== undefined) expect(signal.aborted).toBe(true);
    await settle();
  });
});
