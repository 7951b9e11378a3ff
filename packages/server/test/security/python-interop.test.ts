// Interop with CPython's standard library, both roles, over a Unix socket and TCP:
// `multiprocessing.connection.Client(address, authkey=key)` calls an ezipc server with
// send_bytes/recv_bytes, and an ezipc client calls a `Listener(address, authkey=key)` that
// serves a small JSON-RPC loop. The legacy interpreter (3.11, raw HMAC-MD5) needs
// `allowLegacyDigest: true` and is refused without it; 3.12+ speak sha256 with the option off.
import { join } from "node:path";
import {
  AuthenticationError,
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
import { describe, expect, expectTypeOf } from "vitest";
import { z } from "zod";
import { type Cleanups, ErrorLog, isError, it, within } from "./helpers/cleanup.js";
import {
  ezipcAddress,
  findPythons,
  fixtureAddress,
  type Python,
  PythonProcess,
} from "./helpers/python.js";

// Non-ASCII on purpose: both sides must agree that a string key means its UTF-8 bytes.
const KEY = "pässwörd-🔑";
const WRONG_KEY = "not the key";

const contract = defineContract({
  server: {
    // By-name params.
    greet: method({
      params: z.object({ name: z.string() }),
      result: z.object({ greeting: z.string(), authenticated: z.boolean() }),
    }),
    // By-position params.
    add: method({ params: z.tuple([z.number(), z.number()]), result: z.number() }),
    log: notification({ params: z.object({ line: z.string() }) }),
  },
});

// What py_jsonrpc_listener.py serves: add [a, b] → a + b, echo params → params; `missing`
// is not served there, so it must come back as -32601.
const pythonContract = defineContract({
  server: {
    add: method({ params: z.tuple([z.number(), z.number()]), result: z.number() }),
    echo: method({
      params: z.object({ text: z.string(), n: z.number() }),
      result: z.object({ text: z.string(), n: z.number() }),
    }),
    missing: method({ result: z.null() }),
  },
});

const GREET = `{"jsonrpc":"2.0","id":1,"method":"greet","params":{"name":"Ada"}}`;
const ADD = `{"jsonrpc":"2.0","id":"two","method":"add","params":[40,2]}`;
const LOG = `{"jsonrpc":"2.0","method":"log","params":{"line":"from python"}}`;
const UNKNOWN = `{"jsonrpc":"2.0","id":3,"method":"subtract","params":[1,2]}`;
const INVALID = `{"jsonrpc":"2.0","id":4,"method":"add","params":["forty",2]}`;
const GREET_AGAIN = `{"jsonrpc":"2.0","id":5,"method":"greet","params":{"name":"Bob"}}`;

type Kind = "unix" | "tcp";
const KINDS: Kind[] = ["unix", "tcp"];

const { legacy, modern } = findPythons();

interface Interpreter {
  label: string;
  python: Python | undefined;
  /** The option this interpreter needs: on for the legacy HMAC-MD5 one only. */
  allowLegacyDigest: boolean;
}

const interpreters: Interpreter[] = [
  {
    label: `python3 (3.${legacy?.minor ?? "11"}, legacy HMAC-MD5, allowLegacyDigest on)`,
    python: legacy,
    allowLegacyDigest: true,
  },
  ...modern.map(({ minor, python }) => ({
    label: `CPython 3.${minor} (sha256, allowLegacyDigest off)`,
    python,
    allowLegacyDigest: false,
  })),
];

interface Harness {
  server: Server;
  errors: ErrorLog;
  /** `ctx.connection` of every handler call, with the method. */
  seen: { method: string; connection: ConnectionInfo }[];
  logs: string[];
}

async function startServer(
  cleanups: Cleanups,
  kind: Kind,
  options: ServerOptions,
): Promise<Harness> {
  const errors = new ErrorLog();
  const seen: Harness["seen"] = [];
  const logs: string[] = [];
  const server = createServer(
    contract,
    {
      greet: ({ name }, ctx) => {
        seen.push({ method: "greet", connection: ctx.connection });
        return { greeting: `Hello, ${name}!`, authenticated: ctx.connection.authenticated };
      },
      add: ([a, b], ctx) => {
        seen.push({ method: "add", connection: ctx.connection });
        return a + b;
      },
      log: ({ line }, ctx) => {
        seen.push({ method: "log", connection: ctx.connection });
        logs.push(line);
      },
    },
    { ...options, onError: errors.hook },
  );
  cleanups.add(server, (s) => within(s.close({ timeout: 1_000 }), 2_000, "server.close()"));
  const address =
    kind === "unix" ? `unix:${join(cleanups.tempDir(), "s.sock")}` : "tcp://127.0.0.1:0";
  await server.listen(address);
  return { server, errors, seen, logs };
}

/** Runs py_jsonrpc_client.py against `address` with `messages`; resolves once it exited. */
function pythonClient(
  cleanups: Cleanups,
  python: Python,
  address: string,
  messages: string[],
  key: string,
) {
  const child = new PythonProcess(
    cleanups,
    python,
    "py_jsonrpc_client.py",
    [fixtureAddress(address), ...messages],
    key,
  );
  return child.result();
}

/** Starts py_jsonrpc_listener.py on a fresh address; resolves with it and its ezipc address. */
async function pythonListener(cleanups: Cleanups, python: Python, kind: Kind, key: string) {
  const bind = kind === "unix" ? `unix:${join(cleanups.tempDir(), "py.sock")}` : "tcp:127.0.0.1:0";
  const child = new PythonProcess(cleanups, python, "py_jsonrpc_listener.py", [bind], key);
  const listening = await child.line("listening ");
  return { child, address: ezipcAddress(listening.slice("listening ".length)) };
}

for (const { label, python, allowLegacyDigest } of interpreters) {
  // Skipped only when this interpreter is not installed: the proof needs the real CPython.
  describe.skipIf(python === undefined).concurrent(label, () => {
    const py = python!;

    describe.each(KINDS)("over %s", (kind) => {
      it("multiprocessing.connection.Client calls an ezipc server: by-name, by-position, -32601, -32602", async ({
        cleanups,
      }) => {
        const { server, errors, seen, logs } = await startServer(cleanups, kind, {
          authKey: KEY,
          allowLegacyDigest,
        });
        const { code, lines, stderr } = await pythonClient(
          cleanups,
          py,
          server.address,
          [GREET, ADD, LOG, UNKNOWN, INVALID, GREET_AGAIN],
          KEY,
        );
        expect(stderr).toBe("");
        expect(code).toBe(0);
        const responses = lines.map((line) => JSON.parse(line));
        // One response per request, in order; the notification got none.
        expect(responses).toHaveLength(5);
        expect(responses[0]).toStrictEqual({
          jsonrpc: "2.0",
          id: 1,
          result: { greeting: "Hello, Ada!", authenticated: true },
        });
        expect(responses[1]).toStrictEqual({ jsonrpc: "2.0", id: "two", result: 42 });
        expect(responses[2]).toMatchObject({
          jsonrpc: "2.0",
          id: 3,
          error: { code: ErrorCodes.MethodNotFound },
        });
        expect(responses[3]).toMatchObject({
          jsonrpc: "2.0",
          id: 4,
          error: { code: ErrorCodes.InvalidParams },
        });
        // zod's issues point at the bad element.
        expect(responses[3].error.data).toEqual(
          expect.arrayContaining([expect.objectContaining({ path: [0] })]),
        );
        expect(responses[4]).toStrictEqual({
          jsonrpc: "2.0",
          id: 5,
          result: { greeting: "Hello, Bob!", authenticated: true },
        });
        expect(logs).toStrictEqual(["from python"]);
        // Every handler ran on an authenticated connection of this transport.
        expect(seen.map((s) => s.method)).toStrictEqual(["greet", "add", "log", "greet"]);
        for (const { connection } of seen) {
          expect(connection.authenticated).toBe(true);
          expect(connection.transport).toBe(kind);
        }
        expect(errors.errors.filter((e) => e instanceof AuthenticationError)).toStrictEqual([]);
      });

      it("an ezipc client calls a multiprocessing.connection.Listener and gets typed results", async ({
        cleanups,
      }) => {
        const { child, address } = await pythonListener(cleanups, py, kind, KEY);
        const client = await connect(pythonContract, address, {
          authKey: KEY,
          allowLegacyDigest,
        });
        cleanups.add(client, (c) => c.close());
        expect(await child.line("accepted")).toBe("accepted");
        expect(client.connection.authenticated).toBe(true);

        const sum = await client.call("add", [2, 3.5]);
        expectTypeOf(sum).toEqualTypeOf<number>();
        expect(sum).toBe(5.5);
        const echoed = await client.call("echo", { text: "héllo ✓", n: -1 });
        expectTypeOf(echoed).toEqualTypeOf<{ text: string; n: number }>();
        expect(echoed).toStrictEqual({ text: "héllo ✓", n: -1 });
        await expect(client.call("missing")).rejects.toSatisfy(
          (error) => error instanceof RpcError && error.code === ErrorCodes.MethodNotFound,
        );
        // Still usable after an error response.
        expect(await client.call("add", [-1, 1])).toBe(0);
        expect(client.pendingCount).toBe(0);

        await client.close();
        expect(await child.line("closed")).toBe("closed");
        expect(await child.exited).toBe(0);
        expect(child.lines.filter((l) => l.startsWith("request "))).toStrictEqual([
          "request add",
          "request echo",
          "request missing",
          "request add",
        ]);
      });

      it("a Python Client with the wrong key is refused on both sides; the server keeps serving", async ({
        cleanups,
      }) => {
        const { server, errors, seen } = await startServer(cleanups, kind, {
          authKey: KEY,
          allowLegacyDigest,
        });
        // A client that was in before the attack, and stays.
        const before = await connect(contract, server.address, { authKey: KEY });
        cleanups.add(before, (c) => c.close());

        const bad = await pythonClient(cleanups, py, server.address, [GREET], WRONG_KEY);
        expect(bad.code).toBe(2);
        expect(bad.stderr).toMatch(/^auth-failed AuthenticationError: digest sent was rejected/m);
        expect(bad.lines).toStrictEqual([]);
        await errors.next(isError(AuthenticationError, /key does not match/));
        // Nothing ran for it, and it holds no connection.
        expect(seen).toHaveLength(0);
        expect(server.connections).toHaveLength(1);

        expect(await before.call("add", [1, 2])).toBe(3);
        const good = await pythonClient(cleanups, py, server.address, [GREET], KEY);
        expect(good.code).toBe(0);
        expect(JSON.parse(good.lines[0]!)).toStrictEqual({
          jsonrpc: "2.0",
          id: 1,
          result: { greeting: "Hello, Ada!", authenticated: true },
        });
      });

      it("an ezipc client with the wrong key is refused by the Python Listener on both sides", async ({
        cleanups,
      }) => {
        const { child, address } = await pythonListener(cleanups, py, kind, KEY);
        await expect(
          connect(pythonContract, address, { authKey: WRONG_KEY, allowLegacyDigest }),
        ).rejects.toSatisfy(
          (error) =>
            error instanceof AuthenticationError && /rejected our answer/.test(error.message),
        );
        expect(await child.line("auth-failed")).toMatch(/^auth-failed AuthenticationError/);
        expect(await child.exited).toBe(2);
      });

      if (allowLegacyDigest) {
        it("without allowLegacyDigest, the legacy Client is REFUSED (AuthenticationError in onError)", async ({
          cleanups,
        }) => {
          const { server, errors, seen } = await startServer(cleanups, kind, { authKey: KEY });
          const { code, stderr, lines } = await pythonClient(
            cleanups,
            py,
            server.address,
            [GREET],
            KEY,
          );
          expect(code).toBe(2);
          expect(stderr).toMatch(/^auth-failed AuthenticationError: digest sent was rejected/m);
          expect(lines).toStrictEqual([]);
          const error = await errors.next((e) => e instanceof AuthenticationError);
          expect((error as Error).message).toMatch(/legacy MD5.*allowLegacyDigest: true/);
          expect(seen).toHaveLength(0);
          expect(server.connections).toHaveLength(0);
        });

        it("without allowLegacyDigest, connecting to the legacy Listener is REFUSED with AuthenticationError", async ({
          cleanups,
        }) => {
          const { child, address } = await pythonListener(cleanups, py, kind, KEY);
          await expect(connect(pythonContract, address, { authKey: KEY })).rejects.toSatisfy(
            (error) =>
              error instanceof AuthenticationError &&
              /legacy MD5.*allowLegacyDigest: true/.test(error.message),
          );
          expect(await child.line("auth-failed")).toMatch(
            /^auth-failed (EOFError|ConnectionReset)/,
          );
          expect(await child.exited).toBe(2);
        });
      }
    });
  });
}
