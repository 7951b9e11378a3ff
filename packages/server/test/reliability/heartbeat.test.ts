// Server heartbeats: a silent ezipc client is found within interval + timeout; a client
// that answers stays; a plain JSON-RPC client is never sent an unsolicited ping; a flood
// of pings from a client that does not read is bounded by the outgoing queue.
import { once } from "node:events";
import {
  type Connection,
  connect,
  createServer,
  defineContract,
  method,
  type Server,
  type ServerOptions,
} from "ezipc";
import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { z } from "zod";
import { frame, type ListenPlace, listenPlace, RawClient } from "../helpers/raw-socket.js";

const contract = defineContract({
  server: { echo: method({ params: z.object({ n: z.number() }), result: z.number() }) },
});

let place: ListenPlace;
const servers: Server<typeof contract.server>[] = [];
const raws: RawClient[] = [];

beforeEach(() => {
  place = listenPlace("unix");
});

afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(raws.splice(0).map((r) => r.destroy()));
  await Promise.all(servers.splice(0).map((s) => s.close({ timeout: 0 })));
  place.cleanup();
});

async function start(options: ServerOptions) {
  const server = createServer(contract, { echo: ({ n }) => n }, options);
  servers.push(server);
  await server.listen(place.address);
  return server;
}

async function raw(server: Server<typeof contract.server>): Promise<RawClient> {
  const r = await RawClient.connect(server.address);
  raws.push(r);
  return r;
}

const interval = 1_000;
const timeout = 500;

it("a silent ezipc client is pinged after interval and dropped after timeout, not before", async () => {
  // Socket I/O is real; the clocks of the heartbeat and of the ping's deadline are fake.
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
  const server = await start({ heartbeat: { interval, timeout } });
  const client = await raw(server);
  // ezipc's request metadata marks it as an ezipc client (one that answers rpc.ping).
  expect(
    await client.request(
      JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "echo",
        params: { n: 1 },
        ezipc: { timeout: 5_000 },
      }),
    ),
  ).toMatchObject({ id: 1, result: 1 });
  const lastByte = Date.now();
  let dropped: [Connection, Error | undefined] | undefined;
  let droppedAt = 0;
  server.once("disconnect", (connection, error) => {
    dropped = [connection, error];
    droppedAt = Date.now();
  });

  await vi.advanceTimersByTimeAsync(interval);
  expect(await client.next()).toMatchObject({ jsonrpc: "2.0", method: "rpc.ping" });
  await vi.advanceTimersByTimeAsync(timeout - 1);
  expect(dropped).toBeUndefined();
  await vi.advanceTimersByTimeAsync(1);
  expect(dropped?.[1]?.message).toMatch(/rpc\.ping.*heartbeat.*unresponsive/);
  expect(droppedAt - lastByte).toBeLessThanOrEqual(interval + timeout);
  vi.useRealTimers();
  await client.closed;
  expect(server.connections).toHaveLength(0);
});

it("an ezipc client that answers stays connected; a plain JSON-RPC client is never pinged", async () => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
  const server = await start({ heartbeat: { interval, timeout } });
  const answering = await raw(server);
  const plain = await raw(server);
  // Marks `answering` as an ezipc client: it pings first.
  expect(
    await answering.request(JSON.stringify({ jsonrpc: "2.0", id: "p", method: "rpc.ping" })),
  ).toEqual({ jsonrpc: "2.0", id: "p", result: "pong" });
  const echo = (id: number) =>
    JSON.stringify({ jsonrpc: "2.0", id, method: "echo", params: { n: id } });
  expect(await plain.request(echo(1))).toMatchObject({ id: 1, result: 1 });

  for (let round = 0; round < 5; round++) {
    // Answered at once, or at the last moment (timeout - 1 ms): either keeps it alive.
    const late = round % 2 === 1;
    await vi.advanceTimersByTimeAsync(interval);
    const ping = await answering.next();
    expect(ping).toMatchObject({ method: "rpc.ping" });
    if (late) await vi.advanceTimersByTimeAsync(timeout - 1);
    await answering.send(JSON.stringify({ jsonrpc: "2.0", id: ping.id, result: "pong" }));
    // A round trip behind the pong: the server has read it.
    expect(await answering.request(echo(100 + round))).toMatchObject({ result: 100 + round });
  }
  // Any ping sent to the plain client would arrive before this answer.
  expect(await plain.request(echo(2))).toEqual({ jsonrpc: "2.0", id: 2, result: 2 });
  expect(plain.unread).toBe(0);
  expect(server.connections).toHaveLength(2);
});

it("heartbeat: false never pings", async () => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
  const server = await start({ heartbeat: false });
  const client = await raw(server);
  await client.request(JSON.stringify({ jsonrpc: "2.0", id: "p", method: "rpc.ping" }));
  await vi.advanceTimersByTimeAsync(60_000);
  expect(
    await client.request(
      JSON.stringify({ jsonrpc: "2.0", id: 2, method: "echo", params: { n: 2 } }),
    ),
  ).toMatchObject({ id: 2, result: 2 });
  expect(client.unread).toBe(0);
});

it("a ping flood from a client that does not read is cut off by the bounded outgoing queue", async () => {
  const server = await start({ maxWriteBufferBytes: 64 * 1024 });
  const flooder = await raw(server);
  flooder.socket.pause(); // never reads a pong
  const disconnected = once(server, "disconnect") as Promise<[Connection, Error | undefined]>;
  const ping = frame(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "rpc.ping" }));
  const burst = Buffer.concat(Array.from({ length: 10_000 }, () => ping));
  // 100,000 pings (~4.4 MB): each answered at once, so the pongs pile up unread.
  for (let i = 0; i < 10 && !flooder.isClosed; i++) flooder.socket.write(burst);
  const [, error] = await disconnected;
  expect(error?.message).toMatch(/maxWriteBufferBytes/);
  // Everyone else is served as before.
  const other = await connect(contract, server.address);
  expect(await other.call("echo", { n: 3 })).toBe(3);
  await other.close();
});
