// Type tests: checked by `tsc -p tsconfig.json` (part of `pnpm test`), never executed. Every
// `@ts-expect-error` line must keep failing to compile, or the build fails.
import { type Client, connect, createServer, type Server } from "ezipc";
import { describe, expectTypeOf, test } from "vitest";
import { z } from "zod";
import { defineContract, method, notification } from "./contract.js";
import type {
  CallArgs,
  HandlerContext,
  Handlers,
  InferHandlerParams,
  InferHandlerResult,
  InferParams,
  InferResult,
  MethodNames,
  NotificationNames,
  NotifyArgs,
  RemoteApi,
} from "./types.js";

const isoDate = z.codec(z.iso.datetime(), z.date(), {
  decode: (text) => new Date(text),
  encode: (date) => date.toISOString(),
});

const files = defineContract({
  server: {
    write: method({
      params: z.object({ filename: z.string(), content: z.string() }),
      result: z.object({ written: z.number().int() }),
    }),
    stat: method({ params: z.tuple([z.string(), z.boolean()]), result: z.number() }),
    list: method({ params: z.object({ dir: z.string() }).optional(), result: z.array(z.string()) }),
    now: method({ result: isoDate }),
    schedule: method({ params: z.object({ at: isoDate }), result: z.object({ next: isoDate }) }),
    measure: method({
      params: z.object({ text: z.string().transform((s) => s.length) }),
      result: z.string().transform((s) => s.length),
    }),
    reset: method({}),
    log: notification({ params: z.object({ line: z.string() }) }),
    ping: notification(),
  },
  client: {
    progress: notification({ params: z.object({ pct: z.number() }) }),
    confirm: method({ params: z.object({ question: z.string() }), result: z.boolean() }),
  },
});

const serverOnly = defineContract({
  server: { add: method({ params: z.tuple([z.number(), z.number()]), result: z.number() }) },
});

type S = typeof files.server;
type C = typeof files.client;

/** A complete, correct implementation of the server half, for spreading into variants. */
const serverHandlers: Handlers<S, C> = {
  write: async ({ content }) => ({ written: content.length }),
  stat: ([path, follow]) => path.length + (follow ? 1 : 0),
  list: (params) => (params === undefined ? [] : [params.dir]),
  now: () => new Date().toISOString(),
  schedule: ({ at }) => ({ next: at.toISOString() }),
  measure: ({ text }) => String(text),
  reset: () => {},
  log: () => {},
  ping: async () => {},
};

const clientHandlers: Handlers<C, S> = {
  progress: () => {},
  confirm: ({ question }) => question.endsWith("?"),
};

describe("inferred params and results", () => {
  test("InferParams is the schema's input; InferResult the result schema's output", () => {
    expectTypeOf<InferParams<S, "write">>().toEqualTypeOf<{ filename: string; content: string }>();
    expectTypeOf<InferResult<S, "write">>().toEqualTypeOf<{ written: number }>();
    expectTypeOf<InferParams<S, "stat">>().toEqualTypeOf<[string, boolean]>();
    expectTypeOf<InferResult<S, "stat">>().toEqualTypeOf<number>();
    expectTypeOf<InferParams<S, "list">>().toEqualTypeOf<{ dir: string } | undefined>();
    expectTypeOf<InferParams<S, "now">>().toEqualTypeOf<undefined>();
    expectTypeOf<InferResult<S, "now">>().toEqualTypeOf<Date>();
    expectTypeOf<InferResult<S, "reset">>().toEqualTypeOf<void>();
    expectTypeOf<InferParams<S, "log">>().toEqualTypeOf<{ line: string }>();
    expectTypeOf<InferParams<S, "ping">>().toEqualTypeOf<undefined>();
  });

  test("absent params and result stay undefined inside defineContract, as they do standalone", () => {
    const standalone = { m: method({}), n: notification() };
    expectTypeOf(standalone.m.params).toEqualTypeOf<undefined>();
    expectTypeOf(standalone.m.result).toEqualTypeOf<undefined>();
    expectTypeOf(standalone.n.params).toEqualTypeOf<undefined>();
    // The contract's side is the contextual type of method(…): it must not leak into inference.
    const inContract = defineContract({ server: { m: method({}), n: notification() } });
    expectTypeOf(inContract.server.m.params).toEqualTypeOf<undefined>();
    expectTypeOf(inContract.server.m.result).toEqualTypeOf<undefined>();
    expectTypeOf(inContract.server.n.params).toEqualTypeOf<undefined>();
  });

  test("a codec or transform makes the caller's input differ from the handler's output", () => {
    expectTypeOf<InferParams<S, "schedule">>().toEqualTypeOf<{ at: string }>();
    expectTypeOf<InferHandlerParams<S, "schedule">>().toEqualTypeOf<{ at: Date }>();
    expectTypeOf<InferResult<S, "schedule">>().toEqualTypeOf<{ next: Date }>();
    expectTypeOf<InferHandlerResult<S, "schedule">>().toEqualTypeOf<{ next: string }>();
    expectTypeOf<InferParams<S, "measure">>().toEqualTypeOf<{ text: string }>();
    expectTypeOf<InferHandlerParams<S, "measure">>().toEqualTypeOf<{ text: number }>();
    expectTypeOf<InferResult<S, "measure">>().toEqualTypeOf<number>();
    expectTypeOf<InferHandlerResult<S, "measure">>().toEqualTypeOf<string>();
  });

  test("method and notification names are told apart", () => {
    expectTypeOf<MethodNames<S>>().toEqualTypeOf<
      "write" | "stat" | "list" | "now" | "schedule" | "measure" | "reset"
    >();
    expectTypeOf<NotificationNames<S>>().toEqualTypeOf<"log" | "ping">();
    expectTypeOf<MethodNames<C>>().toEqualTypeOf<"confirm">();
    expectTypeOf<NotificationNames<C>>().toEqualTypeOf<"progress">();
  });

  test("params are optional exactly when the schema accepts undefined or is absent", () => {
    expectTypeOf<CallArgs<S, "write">>().toEqualTypeOf<
      [
        params: { filename: string; content: string },
        options?: import("./types.js").CallOptions<never>,
      ]
    >();
    expectTypeOf<[]>().toExtend<CallArgs<S, "list">>();
    expectTypeOf<[]>().toExtend<CallArgs<S, "now">>();
    expectTypeOf<[]>().toExtend<CallArgs<S, "reset">>();
    expectTypeOf<[]>().not.toExtend<CallArgs<S, "write">>();
    expectTypeOf<[]>().toExtend<NotifyArgs<S, "ping">>();
    expectTypeOf<[]>().not.toExtend<NotifyArgs<S, "log">>();
  });

  test("a params schema must have an object or array JSON form", () => {
    // @ts-expect-error a bare string is neither by-name nor by-position params
    method({ params: z.string(), result: z.number() });
    // @ts-expect-error the same holds for notifications
    notification({ params: z.number() });
    // @ts-expect-error a contract side holds only method(…) and notification(…)
    defineContract({ server: { oops: { kind: "method" } } });
  });
});

describe("a client's calls", () => {
  test("connect gives a typed client whose call and notify follow the contract", () => {
    const typeOnly = async () => {
      const client = await connect(files, "unix:/tmp/ezipc-types.sock", {
        handlers: clientHandlers,
      });
      expectTypeOf(client).toEqualTypeOf<Client<S>>();
      expectTypeOf(client.call("write", { filename: "a", content: "b" })).resolves.toEqualTypeOf<{
        written: number;
      }>();
      expectTypeOf(client.call("stat", ["a", true])).resolves.toEqualTypeOf<number>();
      expectTypeOf(client.call("now")).resolves.toEqualTypeOf<Date>();
      expectTypeOf(client.call("list")).resolves.toEqualTypeOf<string[]>();
      expectTypeOf(client.call("list", { dir: "/" })).resolves.toEqualTypeOf<string[]>();
      expectTypeOf(client.call("list", undefined, { timeout: 5 })).resolves.toBeArray();
      expectTypeOf(client.call("reset")).resolves.toEqualTypeOf<void>();
      expectTypeOf(client.call("schedule", { at: "2025-01-01T00:00:00Z" })).resolves.toEqualTypeOf<{
        next: Date;
      }>();
      expectTypeOf(client.call("measure", { text: "abc" })).resolves.toEqualTypeOf<number>();
      expectTypeOf(client.notify("log", { line: "x" })).toEqualTypeOf<Promise<void>>();
      expectTypeOf(client.notify("ping")).toEqualTypeOf<Promise<void>>();
      const signal = new AbortController().signal;
      await client.call("write", { filename: "a", content: "b" }, { timeout: 1_000, signal });

      // @ts-expect-error content must be a string
      await client.call("write", { filename: "a", content: 1 });
      // @ts-expect-error content is missing
      await client.call("write", { filename: "a" });
      // @ts-expect-error params are required for write
      await client.call("write");
      // @ts-expect-error unknown keys are not part of the contract
      await client.call("write", { filename: "a", content: "b", mode: 0o600 });
      // @ts-expect-error erase is not a method of the contract
      await client.call("erase", { filename: "a" });
      // @ts-expect-error confirm is on the client half: the server does not serve it
      await client.call("confirm", { question: "?" });
      // @ts-expect-error log is a notification: it cannot be called
      await client.call("log", { line: "x" });
      // @ts-expect-error write is a method: it cannot be notified
      await client.notify("write", { filename: "a", content: "b" });
      // @ts-expect-error by-position params: the second item must be a boolean
      await client.call("stat", ["a", "yes"]);
      // @ts-expect-error by-position params: too few items
      await client.call("stat", ["a"]);
      // @ts-expect-error now takes no params
      await client.call("now", { at: 1 });
      // @ts-expect-error the caller sends the codec's input (an ISO string), not a Date
      await client.call("schedule", { at: new Date() });
      // @ts-expect-error the caller sends the transform's input (a string), not its output
      await client.call("measure", { text: 3 });
      // @ts-expect-error log needs its params
      await client.notify("log");
      // @ts-expect-error timeout is a number
      await client.call("list", undefined, { timeout: "5s" });
      // @ts-expect-error the result is not a string
      const wrong: string = await client.call("stat", ["a", true]);
      return wrong;
    };
    expectTypeOf(typeOnly).toBeFunction();
  });

  test("connect requires handlers exactly when the contract has a client half", () => {
    const typeOnly = async () => {
      const address = "tcp://127.0.0.1:9";
      // @ts-expect-error the contract has a client half: handlers are required
      await connect(files, address);
      // @ts-expect-error options without handlers are not enough either
      await connect(files, address, { timeout: 1_000 });
      // @ts-expect-error every client-half entry needs a handler (confirm is missing)
      await connect(files, address, { handlers: { progress: () => {} } });
      await connect(files, address, {
        handlers: {
          progress: ({ pct }) => {
            expectTypeOf(pct).toEqualTypeOf<number>();
          },
          // @ts-expect-error confirm returns a boolean
          confirm: () => "yes",
        },
      });
      await connect(files, address, {
        handlers: {
          progress: () => {},
          confirm: async ({ question }, ctx) => {
            expectTypeOf(question).toEqualTypeOf<string>();
            expectTypeOf(ctx.signal).toEqualTypeOf<AbortSignal>();
            // ctx.peer is the server half: the client can call back into the server.
            expectTypeOf(ctx.peer).toEqualTypeOf<RemoteApi<S>>();
            await ctx.peer.call("write", { filename: "a", content: "b" });
            // @ts-expect-error confirm is the client's own method, not the server's
            await ctx.peer.call("confirm", { question: "?" });
            return true;
          },
        },
      });
      // A contract without a client half needs no options at all.
      const plain = await connect(serverOnly, address);
      expectTypeOf(plain.call("add", [1, 2])).resolves.toEqualTypeOf<number>();
      // @ts-expect-error add takes two numbers
      await plain.call("add", [1, "2"]);
      await connect(serverOnly, address, { timeout: 5 });
    };
    expectTypeOf(typeOnly).toBeFunction();
  });
});

describe("a server's handlers", () => {
  test("createServer takes handlers typed from the contract: parsed params in, input results out", () => {
    const typeOnly = () => {
      const server = createServer(files, {
        ...serverHandlers,
        write: async ({ filename, content }, ctx) => {
          expectTypeOf(filename).toEqualTypeOf<string>();
          expectTypeOf(content).toEqualTypeOf<string>();
          expectTypeOf(ctx.signal).toEqualTypeOf<AbortSignal>();
          expectTypeOf(ctx.connection.id).toEqualTypeOf<string>();
          return { written: content.length };
        },
        schedule: ({ at }) => {
          expectTypeOf(at).toEqualTypeOf<Date>();
          return { next: at.toISOString() };
        },
        measure: ({ text }) => {
          expectTypeOf(text).toEqualTypeOf<number>();
          return "abc";
        },
        log: ({ line }, ctx) => {
          expectTypeOf(line).toEqualTypeOf<string>();
          expectTypeOf(ctx.id).toEqualTypeOf<string | number | undefined>();
        },
      });
      expectTypeOf(server).toEqualTypeOf<Server<S, C>>();
      return server;
    };
    expectTypeOf(typeOnly).toBeFunction();
  });

  test("ctx.peer in a server handler offers only the client half", () => {
    const typeOnly = () =>
      createServer(files, {
        ...serverHandlers,
        write: async ({ content }, ctx) => {
          expectTypeOf(ctx.peer).toEqualTypeOf<RemoteApi<C>>();
          const ok = await ctx.peer.call("confirm", { question: "overwrite?" });
          expectTypeOf(ok).toEqualTypeOf<boolean>();
          await ctx.peer.notify("progress", { pct: 50 });
          // @ts-expect-error write is on the server half: the client does not serve it
          await ctx.peer.call("write", { filename: "a", content: "b" });
          // @ts-expect-error progress is a notification
          await ctx.peer.call("progress", { pct: 1 });
          // @ts-expect-error pct must be a number
          await ctx.peer.notify("progress", { pct: "50%" });
          return { written: content.length };
        },
      });
    expectTypeOf(typeOnly).toBeFunction();
  });

  test("createServer refuses missing handlers, wrong results and unknown names", () => {
    const typeOnly = () => {
      const { log: _log, ...withoutLog } = serverHandlers;
      const { write: _write, ...withoutWrite } = serverHandlers;
      // @ts-expect-error the log notification has no handler
      createServer(files, withoutLog);
      // @ts-expect-error the write method has no handler
      createServer(files, withoutWrite);
      // @ts-expect-error written must be a number
      createServer(files, { ...serverHandlers, write: () => ({ written: "many" }) });
      // @ts-expect-error the result must be an object, not a number
      createServer(files, { ...serverHandlers, write: async () => 3 });
      // @ts-expect-error a handler returns the codec's input (an ISO string), not a Date
      createServer(files, { ...serverHandlers, schedule: ({ at }) => ({ next: at }) });
      // @ts-expect-error a handler returns the transform's input (a string), not its output
      createServer(files, { ...serverHandlers, measure: ({ text }) => text });
      // @ts-expect-error params arrive parsed: text is a number, not a string
      createServer(files, { ...serverHandlers, measure: ({ text }) => text.toUpperCase() });
      // @ts-expect-error erase is not in the contract
      createServer(files, { ...serverHandlers, erase: () => {} });
      // @ts-expect-error the client half is implemented by clients, not the server
      createServer(files, clientHandlers);
    };
    expectTypeOf(typeOnly).toBeFunction();
  });

  test("Handlers maps each entry to a handler with the parsed params and a context", () => {
    type WriteArgs = Parameters<Handlers<S, C>["write"]>;
    expectTypeOf<WriteArgs[0]>().toEqualTypeOf<{ filename: string; content: string }>();
    expectTypeOf<WriteArgs[1]>().toExtend<HandlerContext<C, any>>();
    expectTypeOf<WriteArgs[1]["peer"]>().toEqualTypeOf<RemoteApi<C>>();
    expectTypeOf<Parameters<Handlers<S, C>["now"]>[0]>().toEqualTypeOf<undefined>();
    expectTypeOf<Parameters<Handlers<S, C>["schedule"]>[0]>().toEqualTypeOf<{ at: Date }>();
    expectTypeOf<ReturnType<Handlers<S, C>["stat"]>>().toEqualTypeOf<number | Promise<number>>();
    expectTypeOf<ReturnType<Handlers<S, C>["log"]>>().toEqualTypeOf<void | Promise<void>>();
  });
});
