// Authentication and authorization over real sockets: a wrong key, a stalled or oversized
// handshake, a client without a key, the cap on unauthenticated connections, the refusal to
// listen unprotected on a network, and the `authorize` hook.
import { join } from "node:path";
import {
  AuthenticationError,
  ConnectionClosedError,
  type ConnectionInfo,
  connect,
  createServer,
  defineContract,
  ErrorCodes,
  method,
  notification,
  RpcError,
  type Server,
  type ServerOptions,
} from "ezipc";
import { describe, expect } from "vitest";
import { z } from "zod";
import { type Cleanups, deferred, ErrorLog, isError, it, within } from "./helpers/cleanup.js";
import { header, RawSocket } from "./helpers/raw.js";

const contract = defineContract({
  server: {
    echo: method({ params: z.object({ text: z.string() }), result: z.string() }),
    read: method({ params: z.object({ file: z.string() }), result: z.string() }),
    admin: method({ params: z.object({ action: z.string() }), result: z.literal("done") }),
    note: notification({ params: z.object({ line: z.string() }) }),
  },
});

const KEY = "the right key";

type Kind = "unix" | "tcp";

interface Harness {
  server: Server;
  errors: ErrorLog;
  calls: { method: string; connection: ConnectionInfo }[];
}

async function start(
  cleanups: Cleanups,
  options: ServerOptions,
  kind: Kind = "unix",
): Promise<Harness> {
  const errors = new ErrorLog();
  const calls: Harness["calls"] = [];
  const server = createServer(
    contract,
    {
      echo: ({ text }, ctx) => {
        calls.push({ method: "echo", connection: ctx.connection });
        return text;
      },
      read: ({ file }, ctx) => {
        calls.push({ method: "read", connection: ctx.connection });
        return `contents of ${file}`;
      },
      admin: (_params, ctx) => {
        calls.push({ method: "admin", connection: ctx.connection });
        return "done" as const;
      },
      note: (_params, ctx) => {
        calls.push({ method: "note", connection: ctx.connection });
      },
    },
    { ...options, onError: errors.hook },
  );
  cleanups.add(server, (s) => within(s.close({ timeout: 1_000 }), 2_000, "server.close()"));
  await server.listen(
    kind === "unix" ? `unix:${join(cleanups.tempDir(), "s.sock")}` : "tcp://127.0.0.1:0",
  );
  return { server, errors, calls };
}

/** An ezipc client, closed at cleanup. */
async function client(cleanups: Cleanups, server: Server, options: { authKey?: string } = {}) {
  const c = await connect(contract, server.address, options);
  return cleanups.add(c, (x) => x.close());
}

/** Resolves once the server holds no connection (each one's 'disconnect' was emitted). */
async function noConnections(server: Server): Promise<void> {
  while (server.connections.length > 0) {
    await new Promise((resolve) => server.once("disconnect", resolve));
  }
}

describe.each<Kind>(["unix", "tcp"])("authKey over %s", (kind) => {
  it("a wrong key: AuthenticationError on both sides, onError has it, no connection remains", async ({
    cleanups,
  }) => {
    const { server, errors, calls } = await start(cleanups, { authKey: KEY }, kind);
    const error = await connect(contract, server.address, { authKey: "wrong key" }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as Error).message).toMatch(/rejected our answer/);
    // The server saw it too, as an AuthenticationError of its own.
    await errors.next(isError(AuthenticationError, /key does not match/));
    expect(server.connections).toHaveLength(0);
    expect(calls).toStrictEqual([]);
    // The right key still gets in.
    const good = await client(cleanups, server, { authKey: KEY });
    expect(await good.call("echo", { text: "in" })).toBe("in");
    expect(server.connections.map((c) => c.authenticated)).toStrictEqual([true]);
  });

  it("a stalled handshake (connects, sends nothing) is closed at handshakeTimeout", async ({
    cleanups,
  }) => {
    const { server, errors } = await start(cleanups, { authKey: KEY, handshakeTimeout: 300 }, kind);
    const stalled = await RawSocket.connect(cleanups, server.address);
    // The server challenges at once, Python's way…
    const challenge = (await stalled.nextRaw()).toString("latin1");
    expect(challenge.startsWith("#CHALLENGE#{sha256}")).toBe(true);
    // …and, with no answer, closes the connection at its deadline.
    await stalled.closed;
    await errors.next(isError(AuthenticationError, /within 300 ms/));
    expect(server.connections).toHaveLength(0);
  });

  it.for([
    ["257 bytes (one over the limit)", 257],
    ["1 MiB", 1024 * 1024],
    ["4 GiB - 1", 0xffff_ffff],
  ] as const)(
    "an oversize handshake frame (%s) is refused at its header, without buffering",
    async ([, length], { cleanups }) => {
      // A long deadline: the close must come from the header, not from the clock.
      const { server, errors } = await start(
        cleanups,
        { authKey: KEY, handshakeTimeout: 60_000 },
        kind,
      );
      const raw = await RawSocket.connect(cleanups, server.address);
      await raw.nextRaw(); // the challenge
      // The header and only the start of the body: waiting for the rest would hang.
      await raw.write(Buffer.concat([header(length), Buffer.alloc(16, 0x41)]));
      await raw.closed;
      const error = await errors.next((e) => e instanceof AuthenticationError);
      expect((error as Error).message).toMatch(/larger than 256 bytes/);
      expect(errors.errors.some((e) => /within/.test(String(e)))).toBe(false);
      expect(server.connections).toHaveLength(0);
    },
  );

  it("a client without an authKey: its call rejects with ConnectionClosedError caused by an AuthenticationError", async ({
    cleanups,
  }) => {
    const { server, errors, calls } = await start(cleanups, { authKey: KEY }, kind);
    const keyless = await client(cleanups, server);
    const error = await keyless.call("echo", { text: "let me in" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectionClosedError);
    const cause = (error as Error).cause;
    expect(cause).toBeInstanceOf(AuthenticationError);
    expect((cause as Error).message).toMatch(/requires authentication.*authKey/);
    expect(calls).toStrictEqual([]);
    await errors.next((e) => e instanceof AuthenticationError);
    await noConnections(server);
  });
});

describe("maxUnauthenticated", () => {
  it("connections stuck in their handshake beyond the cap are refused; an authenticated client keeps working", async ({
    cleanups,
  }) => {
    const { server, errors } = await start(cleanups, {
      authKey: KEY,
      maxUnauthenticated: 2,
      handshakeTimeout: 60_000,
    });
    const good = await client(cleanups, server, { authKey: KEY });
    expect(await good.call("echo", { text: "before" })).toBe("before");

    // Two connections that never answer the challenge fill the cap…
    const stuck = [
      await RawSocket.connect(cleanups, server.address),
      await RawSocket.connect(cleanups, server.address),
    ];
    for (const s of stuck) await s.nextRaw(); // each was challenged: it is in its handshake
    // …so the next one is refused with a frame that says why, then closed.
    const excess = await RawSocket.connect(cleanups, server.address);
    const refusal = await excess.next();
    expect(refusal).toMatchObject({ jsonrpc: "2.0", id: null });
    expect(refusal.error.code).toBe(ErrorCodes.Overloaded);
    expect(refusal.error.message).toMatch(/handshake/);
    await excess.closed;
    await errors.next((e) => e instanceof Error && /maxUnauthenticated \(2\)/.test(e.message));

    // The authenticated client is unaffected.
    expect(await good.call("echo", { text: "during" })).toBe("during");
    expect(server.connections).toHaveLength(1);

    // Once a stuck one leaves, its slot is free again.
    stuck[0]!.socket.destroy();
    await errors.next(isError(AuthenticationError, /closed during the authentication handshake/));
    const second = await client(cleanups, server, { authKey: KEY });
    expect(await second.call("echo", { text: "after" })).toBe("after");
    expect(await good.call("echo", { text: "still" })).toBe("still");
  });

  it("an ezipc client refused by the cap is told the server is overloaded, not that its key is wrong", async ({
    cleanups,
  }) => {
    const { server } = await start(cleanups, {
      authKey: KEY,
      maxUnauthenticated: 1,
      handshakeTimeout: 60_000,
    });
    const stuck = await RawSocket.connect(cleanups, server.address);
    await stuck.nextRaw();
    const error = await connect(contract, server.address, { authKey: KEY }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(Error);
    // The server sent {"error":{"code":-32003,"message":"Too many connections in their
    // handshake"}}: that reason is what the user needs to see.
    expect((error as Error).message).toMatch(/too many connections/i);
  });
});

describe("listening on a network address", () => {
  it("tcp://0.0.0.0 without TLS, authKey or insecure is refused with an error naming the fix", async ({
    cleanups,
  }) => {
    const server = createServer(contract, {
      echo: ({ text }) => text,
      read: () => "",
      admin: () => "done" as const,
      note: () => {},
    });
    cleanups.add(server, (s) => s.close());
    const error = await server.listen("tcp://0.0.0.0:0").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    const message = (error as Error).message;
    expect(message).toContain("tcp://0.0.0.0:0");
    for (const fix of ["tls://", "authKey", "insecure: true", "127.0.0.1"]) {
      expect(message).toContain(fix);
    }
    expect(server.listening).toBe(false);
    // The IPv6 wildcard is no loophole.
    await expect(server.listen("tcp://[::]:0")).rejects.toThrow(/authKey/);
  });

  it.for([
    ["an authKey", { authKey: KEY }],
    ["insecure: true", { insecure: true }],
  ] as const)("tcp://0.0.0.0 is allowed with %s", async ([, options], { cleanups }) => {
    const networked = createServer(
      contract,
      { echo: ({ text }) => text, read: () => "", admin: () => "done" as const, note: () => {} },
      options,
    );
    cleanups.add(networked, (s) => s.close());
    await networked.listen("tcp://0.0.0.0:0");
    expect(networked.listening).toBe(true);
    expect(networked.address).toMatch(/^tcp:\/\/0\.0\.0\.0:[1-9]\d*$/);
    await networked.close();
    expect(networked.listening).toBe(false);
  });
});

describe("the authorize hook", () => {
  it("decides per connection and method: false → Unauthorized, an RpcError is sent as is", async ({
    cleanups,
  }) => {
    const admins = new Set<string>();
    const seen: { connection: string; method: string; params: unknown }[] = [];
    const { server, calls } = await start(cleanups, {
      authorize: ({ connection, method, params }) => {
        seen.push({ connection: connection.id, method, params });
        if (method === "admin") return admins.has(connection.id);
        if (method === "read" && (params as { file: string }).file === "/etc/shadow") {
          return new RpcError(-32050, "not your file", { file: "/etc/shadow" });
        }
        return true;
      },
    });
    const connected = deferred<string>();
    server.once("connect", (c) => connected.resolve(c.id));
    const ops = await client(cleanups, server);
    admins.add(await connected.promise);
    const guest = await client(cleanups, server);

    // Same method, two connections, two verdicts.
    expect(await ops.call("admin", { action: "restart" })).toBe("done");
    const refused = await guest.call("admin", { action: "restart" }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(RpcError);
    expect(refused).toMatchObject({ code: ErrorCodes.Unauthorized });
    // Same connection, two methods.
    expect(await guest.call("read", { file: "notes.txt" })).toBe("contents of notes.txt");
    // A returned RpcError reaches the caller exactly.
    const custom = await guest.call("read", { file: "/etc/shadow" }).catch((e: unknown) => e);
    expect(custom).toBeInstanceOf(RpcError);
    expect(custom).toMatchObject({
      code: -32050,
      message: "not your file",
      data: { file: "/etc/shadow" },
    });
    // Refused calls never reached their handler.
    expect(calls.map((c) => c.method)).toStrictEqual(["admin", "read"]);
    expect(calls[0]!.connection.id).toBe([...admins][0]);
    // The hook was asked for every call, with the connection and the parsed params.
    expect(seen.map((s) => [s.method, s.params])).toStrictEqual([
      ["admin", { action: "restart" }],
      ["admin", { action: "restart" }],
      ["read", { file: "notes.txt" }],
      ["read", { file: "/etc/shadow" }],
    ]);
    expect(new Set(seen.map((s) => s.connection)).size).toBe(2);
  });

  it("params are validated before the hook runs: invalid params → -32602, the hook is not asked", async ({
    cleanups,
  }) => {
    let asked = 0;
    const { server } = await start(cleanups, {
      authorize: () => {
        asked++;
        return false;
      },
    });
    const c = await connect(contract, server.address, { validate: false });
    cleanups.add(c, (x) => x.close());
    await expect(c.call("echo", { text: 42 } as never)).rejects.toMatchObject({
      code: ErrorCodes.InvalidParams,
    });
    expect(asked).toBe(0);
    await expect(c.call("echo", { text: "ok" })).rejects.toMatchObject({
      code: ErrorCodes.Unauthorized,
    });
    expect(asked).toBe(1);
  });

  it("an async hook, a thrown RpcError, and a thrown Error (→ Unauthorized, reported, not leaked)", async ({
    cleanups,
  }) => {
    const { server, errors, calls } = await start(cleanups, {
      authorize: async ({ method, params }) => {
        await Promise.resolve();
        if (method === "echo" && (params as { text: string }).text === "throw rpc") {
          throw new RpcError(-32051, "quota exceeded", { limit: 1 });
        }
        if (method === "echo" && (params as { text: string }).text === "throw error") {
          throw new Error("secret detail of the policy engine");
        }
        return method !== "admin";
      },
    });
    const c = await client(cleanups, server);
    expect(await c.call("echo", { text: "fine" })).toBe("fine");
    await expect(c.call("admin", { action: "x" })).rejects.toMatchObject({
      code: ErrorCodes.Unauthorized,
    });
    await expect(c.call("echo", { text: "throw rpc" })).rejects.toMatchObject({
      code: -32051,
      message: "quota exceeded",
      data: { limit: 1 },
    });
    const hidden = await c.call("echo", { text: "throw error" }).catch((e: unknown) => e);
    expect(hidden).toBeInstanceOf(RpcError);
    expect(hidden).toMatchObject({ code: ErrorCodes.Unauthorized });
    expect(JSON.stringify(hidden)).not.toContain("secret detail");
    expect((hidden as RpcError).message).not.toContain("secret detail");
    await errors.next(isError(Error, /secret detail of the policy engine/));
    expect(calls.map((x) => x.method)).toStrictEqual(["echo"]);
  });

  it("a refused notification is dropped (and reported), never run", async ({ cleanups }) => {
    const { server, errors, calls } = await start(cleanups, {
      authorize: ({ method }) => method !== "note",
    });
    const c = await client(cleanups, server);
    await c.notify("note", { line: "sneaky" });
    // Requests on one connection are handled in order: once echo answered, note was handled.
    expect(await c.call("echo", { text: "after" })).toBe("after");
    expect(calls.map((x) => x.method)).toStrictEqual(["echo"]);
    await errors.next((e) => e instanceof RpcError && e.code === ErrorCodes.Unauthorized);
  });
});
