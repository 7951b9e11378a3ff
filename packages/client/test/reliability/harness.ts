// An in-process server for the reliability tests, with levers over its handlers: calls of
// `hold` (and of `read`, when told) wait until the test releases them; every execution is
// counted, so a resend would show.
import { EventEmitter, once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, type ConnectOptions, connect } from "@ezipc/client";
import { createServer, type Server, type ServerOptions } from "ezipc";
import { type ClientSide, contract, type ServerSide } from "./contract.js";

export interface Harness {
  readonly server: Server<ServerSide, ClientSide>;
  readonly name: string;
  /** Executions per method name (each handler run counts once). */
  readonly runs: Map<string, number>;
  /** `n` of every call that ran, per method, in order. */
  readonly seen: Map<string, number[]>;
  /** Lines received by `log`. */
  readonly lines: string[];
  /** While true, `read` waits like `hold`. */
  holdReads: boolean;
  /** Resolves once `count` held calls are waiting. */
  held(count: number): Promise<void>;
  /** Answers the held call `n` (of `hold` or `read`) with `value`. */
  release(n: number, value?: number): void;
  /** Resolves once `log` received `line`. */
  logged(line: string): Promise<void>;
}

/** A fresh temp dir for Unix socket paths; removed by `cleanup()`. */
export function tempDir(): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), "ezipc-rel-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Everything a test opened, closed in `afterEach` by {@link closeAll}. */
export const opened = {
  servers: [] as Server<ServerSide, ClientSide>[],
  clients: [] as Client<ServerSide>[],
};

/** Closes every client (asserting none has a call left pending) and server. */
export async function closeAll(): Promise<void> {
  const clients = opened.clients.splice(0);
  const servers = opened.servers.splice(0);
  const pending = clients.map((c) => c.pendingCount);
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(servers.map((s) => s.close({ timeout: 0 })));
  if (pending.some((n) => n !== 0)) {
    throw new Error(`a client still had calls pending after the test: ${pending.join(", ")}`);
  }
}

/** Starts an in-process server on `address` named `name` (what `whoami` answers). */
export async function startServer(
  address: string,
  name = "server",
  options: ServerOptions = {},
): Promise<Harness> {
  const events = new EventEmitter();
  const waiting = new Map<number, (value: number) => void>();
  const runs = new Map<string, number>();
  const seen = new Map<string, number[]>();
  const lines: string[] = [];
  const ran = (method: string, n: number) => {
    runs.set(method, (runs.get(method) ?? 0) + 1);
    const list = seen.get(method) ?? [];
    seen.set(method, list);
    list.push(n);
  };
  const wait = (n: number, signal: AbortSignal) =>
    new Promise<number>((resolve, reject) => {
      waiting.set(n, resolve);
      events.emit("held", waiting.size);
      signal.addEventListener(
        "abort",
        () => {
          waiting.delete(n);
          reject(signal.reason);
        },
        { once: true },
      );
    });
  const harness: Harness = {
    server: undefined as unknown as Server<ServerSide, ClientSide>,
    name,
    runs,
    seen,
    lines,
    holdReads: false,
    held: (count) => {
      if (waiting.size >= count) return Promise.resolve();
      return new Promise((resolve) => {
        const listener = (size: number) => {
          if (size < count) return;
          events.off("held", listener);
          resolve();
        };
        events.on("held", listener);
      });
    },
    release: (n, value = n) => {
      const resolve = waiting.get(n);
      if (resolve === undefined) throw new Error(`no held call ${n}`);
      waiting.delete(n);
      resolve(value);
    },
    logged: async (line) => {
      while (!lines.includes(line)) await once(events, "log");
    },
  };
  const server = createServer(
    contract,
    {
      echo: ({ n }) => {
        ran("echo", n);
        return n;
      },
      hold: ({ n }, ctx) => {
        ran("hold", n);
        return wait(n, ctx.signal);
      },
      read: ({ n }, ctx) => {
        ran("read", n);
        return harness.holdReads ? wait(n, ctx.signal) : n;
      },
      whoami: () => name,
      log: ({ line }) => {
        lines.push(line);
        events.emit("log", line);
      },
      async *ticks({ count, hang }, ctx) {
        for (let i = 0; i < count; i++) yield i;
        if (hang) {
          await new Promise((_resolve, reject) =>
            ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true }),
          );
        }
      },
    },
    options,
  );
  (harness as { server: typeof server }).server = server;
  opened.servers.push(server);
  await server.listen(address);
  return harness;
}

/** Connects a client (its `hello` handler answers `hello <from>`); closed by {@link closeAll}. */
export async function openClient(
  address: string,
  options: Omit<ConnectOptions<ServerSide, ClientSide>, "handlers"> = {},
): Promise<Client<ServerSide>> {
  const client = await connect(contract, address, {
    handlers: { hello: ({ from }) => `hello ${from}` },
    ...options,
  });
  opened.clients.push(client);
  return client;
}

/** 0, 1, …, n-1. */
export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
