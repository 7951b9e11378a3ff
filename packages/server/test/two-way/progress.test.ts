// Typed progress over real sockets: values arrive validated and in order before the result,
// nothing is sent to a caller that does not listen, and bad values are dropped and reported.
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import {
  type Client,
  connect,
  createServer,
  defineContract,
  type Handlers,
  method,
  type Server,
  ValidationError,
} from "ezipc";
import { afterEach, describe, expect, expectTypeOf, it } from "vitest";
import { z } from "zod";
import { frame, type ListenPlace, listenPlace, RawClient } from "../helpers/raw-socket.js";

const contract = defineContract({
  server: {
    /** Reports `steps` progress values, one of them invalid when `badAt` says so. */
    job: method({
      params: z.object({ steps: z.number().int().positive(), badAt: z.number().int().optional() }),
      result: z.object({ done: z.number() }),
      progress: z.object({ pct: z.number() }),
    }),
    /** Progress through a transform: the caller receives the schema's output. */
    rounded: method({
      result: z.string(),
      progress: z.object({ pct: z.number().transform((n) => Math.round(n)) }),
    }),
    ping: method({ result: z.literal("pong") }),
  },
});

type S = typeof contract.server;

const handlers: Handlers<S> = {
  job({ steps, badAt }, ctx) {
    for (let i = 1; i <= steps; i++) {
      ctx.progress({ pct: (i / steps) * 100 });
      // @ts-expect-error pct must be a number: a handler bug the schema catches at run time
      if (i === badAt) ctx.progress({ pct: "half" });
    }
    return { done: steps };
  },
  rounded(_params, ctx) {
    ctx.progress({ pct: 33.3 });
    ctx.progress({ pct: 66.6 });
    return "ok";
  },
  ping: () => "pong" as const,
};

let place: ListenPlace | undefined;
let server: Server<S> | undefined;
const clients: Client<S>[] = [];
const raws: RawClient[] = [];
const netServers: NetServer[] = [];
const serverErrors: unknown[] = [];

async function start(): Promise<Server<S>> {
  place = listenPlace("unix");
  server = createServer(contract, handlers, { onError: (error) => serverErrors.push(error) });
  await server.listen(place.address);
  return server;
}

async function open(onError?: (error: unknown) => void): Promise<Client<S>> {
  const client = await connect(contract, server!.address, onError ? { onError } : {});
  clients.push(client);
  return client;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(raws.splice(0).map((r) => r.destroy()));
  await server?.close({ timeout: 0 });
  server = undefined;
  for (const net of netServers.splice(0)) await new Promise((resolve) => net.close(resolve));
  place?.cleanup();
  place = undefined;
  serverErrors.length = 0;
});

describe("progress over a real socket", () => {
  it("onProgress receives every value, in order, before the result resolves", async () => {
    await start();
    const client = await open();
    const seen: { pct: number }[] = [];
    let atResult: unknown[] | undefined;
    const result = await client
      .call(
        "job",
        { steps: 4 },
        {
          onProgress: (value) => {
            expectTypeOf(value).toEqualTypeOf<{ pct: number }>();
            seen.push(value);
          },
        },
      )
      .then((r) => {
        atResult = [...seen];
        return r;
      });
    expect(result).toEqual({ done: 4 });
    expect(atResult).toEqual([{ pct: 25 }, { pct: 50 }, { pct: 75 }, { pct: 100 }]);
    expect(seen).toEqual(atResult);
    expect(client.pendingCount).toBe(0);
  });

  it("onProgress receives the schema's output (after transforms)", async () => {
    await start();
    const client = await open();
    const seen: number[] = [];
    await expect(
      client.call("rounded", undefined, { onProgress: ({ pct }) => seen.push(pct) }),
    ).resolves.toBe("ok");
    expect(seen).toEqual([33, 67]);
  });

  it("a value failing the schema is dropped and reported to the server's onError", async () => {
    await start();
    const client = await open();
    const seen: { pct: number }[] = [];
    await expect(
      client.call("job", { steps: 4, badAt: 2 }, { onProgress: (v) => seen.push(v) }),
    ).resolves.toEqual({ done: 4 });
    expect(seen).toEqual([{ pct: 25 }, { pct: 50 }, { pct: 75 }, { pct: 100 }]);
    expect(serverErrors).toHaveLength(1);
    expect(serverErrors[0]).toBeInstanceOf(ValidationError);
    expect(serverErrors[0]).toMatchObject({ target: "progress" });
  });

  it("a throwing onProgress is reported on the caller's side; the call still resolves", async () => {
    await start();
    const clientErrors: unknown[] = [];
    const client = await open((error) => clientErrors.push(error));
    let calls = 0;
    await expect(
      client.call(
        "job",
        { steps: 3 },
        {
          onProgress: () => {
            calls++;
            throw new Error("listener bug");
          },
        },
      ),
    ).resolves.toEqual({ done: 3 });
    expect(calls).toBe(3);
    expect(clientErrors).toHaveLength(3);
    expect(clientErrors[0]).toMatchObject({ message: "listener bug" });
  });
});

describe("progress on the wire", () => {
  const request = (id: number, ezipc?: object) =>
    JSON.stringify({
      jsonrpc: "2.0",
      id,
      method: "job",
      params: { steps: 4 },
      ...(ezipc && { ezipc }),
    });

  it("without a listener the server sends nothing but the response", async () => {
    await start();
    const raw = await RawClient.connect(server!.address);
    raws.push(raw);
    await raw.send(request(1));
    expect(await raw.next()).toEqual({ jsonrpc: "2.0", id: 1, result: { done: 4 } });
    // A round trip after: had any rpc.progress been sent, it would be queued before this.
    expect(await raw.request(JSON.stringify({ jsonrpc: "2.0", id: 2, method: "ping" }))).toEqual({
      jsonrpc: "2.0",
      id: 2,
      result: "pong",
    });
    expect(raw.unread).toBe(0);
  });

  it("with ezipc.progress the server sends one rpc.progress per value, then the response", async () => {
    await start();
    const raw = await RawClient.connect(server!.address);
    raws.push(raw);
    await raw.send(request(7, { progress: true }));
    const frames: unknown[] = [];
    for (let i = 0; i < 5; i++) frames.push(await raw.next());
    expect(frames).toEqual([
      { jsonrpc: "2.0", method: "rpc.progress", params: { id: 7, value: { pct: 25 } } },
      { jsonrpc: "2.0", method: "rpc.progress", params: { id: 7, value: { pct: 50 } } },
      { jsonrpc: "2.0", method: "rpc.progress", params: { id: 7, value: { pct: 75 } } },
      { jsonrpc: "2.0", method: "rpc.progress", params: { id: 7, value: { pct: 100 } } },
      { jsonrpc: "2.0", id: 7, result: { done: 4 } },
    ]);
  });

  /** A bare frame server: records the client's frames and lets the test answer them. */
  async function rawServer(
    answer: (message: any, reply: (message: object) => void) => void,
  ): Promise<string> {
    const net = createNetServer((socket: Socket) => {
      let buffer = Buffer.alloc(0);
      const reply = (message: object) => socket.write(frame(JSON.stringify(message)));
      socket.on("error", () => {});
      socket.on("data", (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk]);
        // Bounded: each pass consumes a whole frame of the finite buffer.
        while (buffer.length >= 4 && buffer.length >= 4 + buffer.readUInt32BE(0)) {
          const size = buffer.readUInt32BE(0);
          answer(JSON.parse(buffer.subarray(4, 4 + size).toString("utf8")), reply);
          buffer = buffer.subarray(4 + size);
        }
      });
    });
    netServers.push(net);
    await new Promise<void>((resolve) => net.listen(0, "127.0.0.1", resolve));
    const { port } = net.address() as { port: number };
    return `tcp://127.0.0.1:${port}`;
  }

  it("the client asks for progress only when onProgress is set", async () => {
    const requests: any[] = [];
    const address = await rawServer((message, reply) => {
      requests.push(message);
      reply({ jsonrpc: "2.0", id: message.id, result: { done: 1 } });
    });
    const client = await connect(contract, address);
    clients.push(client);
    await client.call("job", { steps: 1 });
    await client.call("job", { steps: 1 }, { onProgress: () => {}, timeout: 0 });
    expect(requests).toHaveLength(2);
    expect(requests[0].ezipc).toEqual({ timeout: 30_000 });
    expect(requests[1].ezipc).toEqual({ progress: true });
  });

  it("the caller drops a progress value failing the schema and reports it to its onError", async () => {
    const address = await rawServer((message, reply) => {
      const id = message.id;
      reply({ jsonrpc: "2.0", method: "rpc.progress", params: { id, value: { pct: 10 } } });
      reply({ jsonrpc: "2.0", method: "rpc.progress", params: { id, value: { pct: "x" } } });
      reply({ jsonrpc: "2.0", method: "rpc.progress", params: { id, value: { pct: 90 } } });
      // Progress for an id nobody waits on is ignored.
      reply({ jsonrpc: "2.0", method: "rpc.progress", params: { id: "nope", value: { pct: 1 } } });
      reply({ jsonrpc: "2.0", id, result: { done: 1 } });
    });
    const clientErrors: unknown[] = [];
    const client = await connect(contract, address, { onError: (e) => clientErrors.push(e) });
    clients.push(client);
    const seen: { pct: number }[] = [];
    await expect(
      client.call("job", { steps: 1 }, { onProgress: (v) => seen.push(v) }),
    ).resolves.toEqual({ done: 1 });
    expect(seen).toEqual([{ pct: 10 }, { pct: 90 }]);
    expect(clientErrors).toHaveLength(1);
    expect(clientErrors[0]).toBeInstanceOf(ValidationError);
    expect(clientErrors[0]).toMatchObject({ target: "progress" });
  });
});
