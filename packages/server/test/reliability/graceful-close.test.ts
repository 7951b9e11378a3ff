// server.close() under load: goaway first, in-flight calls finish, new calls get -32005,
// every call settles exactly once; after the grace period the rest are cut off with a
// clear error; a reconnecting client moves on to the next server on the same path.
import { once } from "node:events";
import { existsSync } from "node:fs";
import {
  type Client,
  ConnectionClosedError,
  connect,
  createServer,
  defineContract,
  ErrorCodes,
  method,
  RpcError,
  type Server,
} from "ezipc";
import { afterEach, beforeEach, expect, it } from "vitest";
import { z } from "zod";
import { type ListenPlace, listenPlace, RawClient } from "../helpers/raw-socket.js";

const contract = defineContract({
  server: {
    /** Waits until the test releases `n`, then answers n × 2. */
    slow: method({ params: z.object({ n: z.number().int() }), result: z.number().int() }),
    whoami: method({ result: z.string() }),
  },
});
type S = typeof contract.server;

interface Started {
  server: Server<S>;
  /** `n` of every `slow` call that ran. */
  ran: number[];
  /** Signals of the running `slow` calls, by n. */
  signals: Map<number, AbortSignal>;
  release(n: number): void;
  running(count: number): Promise<void>;
}

let place: ListenPlace;
const servers: Server<S>[] = [];
const clients: Client<S>[] = [];
const raws: RawClient[] = [];

beforeEach(() => {
  place = listenPlace("unix");
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(raws.splice(0).map((r) => r.destroy()));
  await Promise.all(servers.splice(0).map((s) => s.close({ timeout: 0 })));
  place.cleanup();
});

async function start(address: string, name = "server"): Promise<Started> {
  const waiting = new Map<number, () => void>();
  const signals = new Map<number, AbortSignal>();
  const ran: number[] = [];
  let wake: (() => void) | undefined;
  const server = createServer(contract, {
    slow: ({ n }, ctx) => {
      ran.push(n);
      signals.set(n, ctx.signal);
      return new Promise<number>((resolve) => {
        waiting.set(n, () => resolve(n * 2));
        wake?.();
      });
    },
    whoami: () => name,
  });
  servers.push(server);
  await server.listen(address);
  return {
    server,
    ran,
    signals,
    release: (n) => waiting.get(n)!(),
    running: async (count) => {
      while (waiting.size < count) await new Promise<void>((resolve) => (wake = resolve));
    },
  };
}

async function client(address: string, options: Parameters<typeof connect<S, {}>>[2] = {}) {
  const c = await connect(contract, address, options);
  clients.push(c);
  return c;
}

it("under load: goaway first, in-flight calls complete, new ones get -32005, each call settles exactly once", async () => {
  const { server, ran, release, running } = await start(place.address);
  const a = await client(server.address);
  // A call with a timeout carries ezipc's metadata: the server knows `a` speaks ezipc.
  expect(await a.call("whoami")).toBe("server");
  const raw = await RawClient.connect(server.address);
  raws.push(raw);
  const settled = new Array<number>(300).fill(0);
  const results = new Array<unknown>(300);
  const calls = Array.from({ length: 300 }, (_, n) =>
    a.call("slow", { n }, { timeout: 0 }).then(
      (value) => {
        settled[n]!++;
        results[n] = value;
      },
      (error: unknown) => {
        settled[n]!++;
        results[n] = error;
      },
    ),
  );
  await running(300);

  const goaway = once(a, "goaway");
  const closing = server.close({ timeout: 10_000 });
  expect(await goaway).toEqual(["server is shutting down"]);
  expect(server.listening).toBe(false);

  // The ezipc client knows: it does not send, and says why with the server's code.
  const refused = a.call("slow", { n: 1_000 });
  await expect(refused).rejects.toBeInstanceOf(RpcError);
  await expect(refused).rejects.toMatchObject({ code: ErrorCodes.ShuttingDown });
  // A plain JSON-RPC client is sent nothing unsolicited (it would take a goaway for the
  // answer to its call): its next frame is the -32005 answer to its request.
  expect(await raw.request(JSON.stringify({ jsonrpc: "2.0", id: 7, method: "whoami" }))).toEqual({
    jsonrpc: "2.0",
    id: 7,
    error: { code: ErrorCodes.ShuttingDown, message: "Server is shutting down" },
  });

  for (let n = 0; n < 300; n++) release(n);
  await Promise.all(calls);
  await closing;
  expect(settled.every((count) => count === 1)).toBe(true);
  expect(results).toEqual(Array.from({ length: 300 }, (_, n) => n * 2));
  expect([...ran].sort((x, y) => x - y)).toEqual(Array.from({ length: 300 }, (_, n) => n));
  await raw.closed;
  if (!a.closed) await once(a, "close");
  await expect(a.call("whoami")).rejects.toBeInstanceOf(ConnectionClosedError);
  expect(a.pendingCount).toBe(0);
});

it("when the grace period runs out, the calls still running reject with ConnectionClosedError caused by -32005", async () => {
  const { server, running, signals, release } = await start(place.address);
  const a = await client(server.address);
  const finished = a.call("slow", { n: 1 }, { timeout: 0 });
  const cut = a.call("slow", { n: 2 }, { timeout: 0 }).catch((error: unknown) => error);
  await running(2);
  const closing = server.close({ timeout: 50 });
  release(1);
  expect(await finished).toBe(2);
  const error = (await cut) as ConnectionClosedError;
  expect(error).toBeInstanceOf(ConnectionClosedError);
  expect(error.cause).toBeInstanceOf(RpcError);
  expect(error.cause).toMatchObject({ code: ErrorCodes.ShuttingDown });
  expect(error.message).toMatch(/grace period \(50 ms\)/);
  await closing;
  expect(signals.get(2)!.aborted).toBe(true);
  expect(signals.get(1)!.aborted).toBe(false);
});

it("a reconnecting client follows the goaway to a new server on the same path; the old server leaves the new socket file alone", async () => {
  const path = place.address.slice("unix:".length);
  const old = await start(place.address, "old");
  const a = await client(place.address, { reconnect: { initialDelay: 10, maxDelay: 50 } });
  const inFlight = a.call("slow", { n: 5 }, { timeout: 0 });
  await old.running(1);
  const closing = old.server.close({ timeout: 10_000 });
  await once(a, "goaway");
  // The old server stopped listening (and Node removed its socket file): a new one binds.
  const reconnected = once(a, "connect");
  const next = await start(place.address, "new");
  await reconnected;
  expect(await a.call("whoami")).toBe("new");
  old.release(5);
  expect(await inFlight).toBe(10);
  await closing;
  expect(existsSync(path)).toBe(true);
  const b = await client(place.address);
  expect(await b.call("whoami")).toBe("new");
  expect(next.ran).toEqual([]);
  expect(a.state).toBe("connected");
});
