// A server process killed with SIGKILL under load: every call settles, and the client
// finds its way to the next server process on the same address by itself.
import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Client, type ClientState, connect } from "@ezipc/client";
import { ConnectionClosedError } from "ezipc";
import { afterEach, beforeEach, expect, it } from "vitest";
import { contract, type ServerSide } from "./contract.js";

const fixture = fileURLToPath(new URL("./fixtures/server.ts", import.meta.url));

let dir: string;
const children: ChildProcess[] = [];
const clients: Client<ServerSide>[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "ezipc-kill-"));
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, "exit");
      child.kill("SIGKILL");
      await exited;
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

/** Forks a server process on `address`; resolves with it and its bound address once it listens. */
async function startServer(
  address: string,
  name: string,
): Promise<{ child: ChildProcess; address: string }> {
  const child = fork(fixture, [address, name], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  children.push(child);
  const [message] = (await Promise.race([
    once(child, "message"),
    once(child, "exit").then(([code]) => {
      throw new Error(`server process exited with ${code} before it was ready`);
    }),
  ])) as [{ ready: string }];
  expect(message).toMatchObject({ ready: expect.any(String) });
  return { child, address: message.ready };
}

/** Resolves once the server process reports `count` calls of `hold` running. */
function heldReaches(child: ChildProcess, count: number): Promise<void> {
  return new Promise((resolve) => {
    const listener = (message: unknown) => {
      if ((message as { held?: number }).held === count) {
        child.off("message", listener);
        resolve();
      }
    };
    child.on("message", listener);
  });
}

const places = [
  { kind: "unix", address: () => `unix:${join(dir, "rpc.sock")}` },
  { kind: "tcp", address: () => "tcp://127.0.0.1:0" },
];

it.each(places)(
  "over $kind: SIGKILL with 1,000 calls in flight: all settle within a second; the client reconnects to the new process by itself",
  async ({ address: place }) => {
    const { child: first, address } = await startServer(place(), "first");
    const client = await connect(contract, address, {
      handlers: { hello: ({ from }) => `hello ${from}` },
      reconnect: { initialDelay: 50, maxDelay: 400 },
    });
    clients.push(client);
    const states: ClientState[] = [];
    client.on("state", (state) => states.push(state));

    const held = heldReaches(first, 1_000);
    let resolved = 0;
    const rejections: unknown[] = [];
    const calls = Array.from({ length: 1_000 }, (_, n) =>
      client.call("hold", { n }, { timeout: 0 }).then(
        () => {
          resolved++;
        },
        (error: unknown) => {
          rejections.push(error);
        },
      ),
    );
    await held;
    expect(client.pendingCount).toBe(1_000);

    const killedAt = performance.now();
    first.kill("SIGKILL");
    await Promise.all(calls);
    const settledIn = performance.now() - killedAt;

    expect(resolved + rejections.length).toBe(1_000);
    expect(resolved).toBe(0);
    // In flight when the process died: the outcome is unknown, so each one rejects, once.
    for (const error of rejections) expect(error).toBeInstanceOf(ConnectionClosedError);
    expect(settledIn).toBeLessThan(1_000);
    expect(client.pendingCount).toBe(0);
    expect(client.closed).toBe(false);

    // Calls made while no server is up wait for the next one (within their timeout).
    const waiting = Array.from({ length: 50 }, (_, n) =>
      client.call("echo", { n }, { timeout: 15_000 }),
    );
    expect(client.pendingCount).toBe(50);
    const reconnected = once(client, "connect");
    await startServer(address, "second");
    await reconnected;

    expect(await Promise.all(waiting)).toEqual(Array.from({ length: 50 }, (_, n) => n));
    expect(await client.call("whoami")).toBe("second");
    expect(await client.call("echo", { n: 42 })).toBe(42);
    expect(states[0]).toBe("reconnecting");
    expect(states).toContain("connecting");
    expect(states.at(-1)).toBe("connected");
    expect(client.state).toBe("connected");
    expect(client.pendingCount).toBe(0);
  },
);
