// Calls across a TCP proxy that injects faults: latency, 1-byte slicing, a stall without
// FIN (found by the heartbeat), and a reset.
import { once } from "node:events";
import { ConnectionClosedError } from "ezipc";
import { afterEach, expect, it, vi } from "vitest";
import { FaultProxy } from "./fault-proxy.js";
import { closeAll, openClient, range, startServer } from "./harness.js";

const proxies: FaultProxy[] = [];

afterEach(async () => {
  vi.useRealTimers();
  await closeAll();
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

async function proxied() {
  const harness = await startServer("tcp://127.0.0.1:0");
  const proxy = await FaultProxy.start(harness.server.address);
  proxies.push(proxy);
  return { harness, proxy };
}

it("added latency: 300 pipelined calls, a notification and a server → client call arrive intact", async () => {
  const { harness, proxy } = await proxied();
  proxy.mode = { latency: 20 };
  const client = await openClient(proxy.address);
  const started = performance.now();
  expect(await Promise.all(range(300).map((n) => client.call("echo", { n })))).toEqual(range(300));
  // A round trip crosses the proxy twice.
  expect(performance.now() - started).toBeGreaterThanOrEqual(40);
  await client.notify("log", { line: "late but whole" });
  await harness.logged("late but whole");
  const [connection] = harness.server.connections;
  expect(await connection!.peer.call("hello", { from: "server" })).toBe("hello server");
  expect(harness.runs.get("echo")).toBe(300);
});

it("1-byte slicing: every frame is reassembled, in both directions", async () => {
  const { harness, proxy } = await proxied();
  const client = await openClient(proxy.address);
  proxy.mode = { slice: true };
  const writesBefore = proxy.writes;
  expect(await Promise.all(range(20).map((n) => client.call("echo", { n: n * 1_000 })))).toEqual(
    range(20).map((n) => n * 1_000),
  );
  await client.notify("log", { line: "ü, 日本, 🚀 — split mid-character" });
  await harness.logged("ü, 日本, 🚀 — split mid-character");
  const [connection] = harness.server.connections;
  expect(await connection!.peer.call("hello", { from: "a sliced server" })).toBe(
    "hello a sliced server",
  );
  // Each request is > 60 bytes: one write per byte means well over 20 × 60 writes.
  expect(proxy.writes - writesBefore).toBeGreaterThan(20 * 60 * 2);
});

it("a stall without FIN is found by the heartbeat within interval + timeout; pending calls reject; the client reconnects", async () => {
  // Socket I/O stays real; the clocks the heartbeat and the deadlines read are fake.
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
  const interval = 1_000;
  const timeout = 500;
  const { harness, proxy } = await proxied();
  const client = await openClient(proxy.address, {
    heartbeat: { interval, timeout },
    reconnect: { initialDelay: 100 },
  });
  expect(await client.call("echo", { n: 1 })).toBe(1);
  const held = client.call("hold", { n: 7 }, { timeout: 0 });
  const outcome = held.then(
    () => "resolved",
    (error: unknown) => error,
  );
  await harness.held(1);

  proxy.stall();
  const stalledAt = Date.now();
  let lost: Error | undefined;
  let lostAt: number | undefined;
  client.once("disconnect", (error) => {
    lost = error;
    lostAt = Date.now();
  });
  // Silent for `interval` → ping; no answer within `timeout` → dead. Not a moment before.
  await vi.advanceTimersByTimeAsync(interval + timeout - 1);
  expect(lost).toBeUndefined();
  expect(client.state).toBe("connected");
  await vi.advanceTimersByTimeAsync(1);
  expect(lost).toBeInstanceOf(ConnectionClosedError);
  expect(lost?.message).toMatch(/rpc\.ping.*heartbeat/);
  expect(lostAt! - stalledAt).toBeLessThanOrEqual(interval + timeout);

  const error = await outcome;
  expect(error).toBeInstanceOf(ConnectionClosedError);
  expect((error as Error).message).toMatch(/heartbeat/);
  expect(client.state).toBe("reconnecting");

  // The proxy forwards new connections: the next attempt (due at once) gets through.
  const reconnected = once(client, "connect");
  // (A 0 ms timer set while fake time advances is due 1 ms later.)
  await vi.advanceTimersByTimeAsync(1);
  vi.useRealTimers();
  await reconnected;
  expect(await client.call("echo", { n: 2 })).toBe(2);
  expect(proxy.accepted).toBe(2);
  // The held call ran once and was not sent again.
  expect(harness.seen.get("hold")).toEqual([7]);
});

it("a reset: in-flight calls reject with ConnectionClosedError and are not resent; the client reconnects", async () => {
  const { harness, proxy } = await proxied();
  const client = await openClient(proxy.address, { reconnect: { initialDelay: 20 } });
  const calls = range(100).map((n) =>
    client.call("hold", { n }, { timeout: 0 }).then(
      () => "resolved",
      (error: unknown) => error,
    ),
  );
  await harness.held(100);
  const reconnected = once(client, "connect");
  proxy.reset();
  const outcomes = await Promise.all(calls);
  for (const outcome of outcomes) expect(outcome).toBeInstanceOf(ConnectionClosedError);
  await reconnected;
  expect(await Promise.all(range(10).map((n) => client.call("echo", { n })))).toEqual(range(10));
  expect(harness.seen.get("hold")).toEqual(range(100));
  expect(client.pendingCount).toBe(0);
});
