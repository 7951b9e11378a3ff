// Type tests of two-way use (server → client calls, streams, progress): checked by
// `tsc -p tsconfig.json`, never executed. Every `@ts-expect-error` line must keep failing to
// compile, or the build fails.
import { type Client, type Connection, connect, createServer, type Server } from "ezipc";
import { describe, expectTypeOf, test } from "vitest";
import { z } from "zod";
import { defineContract, method, notification, stream } from "./contract.js";
import type {
  CallOptions,
  HandlerContext,
  Handlers,
  InferHandlerItem,
  InferHandlerProgress,
  InferItem,
  InferParams,
  InferProgress,
  MethodNames,
  NotificationNames,
  RemoteApi,
  StreamArgs,
  StreamNames,
  StreamOptions,
} from "./types.js";

const isoDate = z.codec(z.iso.datetime(), z.date(), {
  decode: (text) => new Date(text),
  encode: (date) => date.toISOString(),
});

const app = defineContract({
  server: {
    /** A stream whose items cross as JSON strings and arrive as Dates (a codec). */
    events: stream({
      params: z.object({ since: isoDate }),
      item: z.object({ at: isoDate, text: z.string() }),
    }),
    /** A stream without params. */
    numbers: stream({ item: z.number() }),
    /** A method with progress; the progress value goes through a transform. */
    build: method({
      params: z.object({ target: z.string() }),
      result: z.object({ ok: z.boolean() }),
      progress: z.object({ pct: z.number(), step: z.string().transform((s) => s.length) }),
    }),
    /** A method without progress. */
    status: method({ result: z.string() }),
    say: notification({ params: z.object({ text: z.string() }) }),
  },
  client: {
    confirm: method({ params: z.object({ question: z.string() }), result: z.boolean() }),
    notice: notification({ params: z.object({ text: z.string() }) }),
    lines: stream({ params: z.object({ file: z.string() }), item: z.string() }),
  },
});

type S = typeof app.server;
type C = typeof app.client;

const serverHandlers: Handlers<S, C> = {
  async *events({ since }) {
    yield { at: since.toISOString(), text: "started" };
  },
  async *numbers() {
    yield 1;
  },
  build: () => ({ ok: true }),
  status: () => "idle",
  say: () => {},
};

const clientHandlers: Handlers<C, S> = {
  confirm: () => true,
  notice: () => {},
  async *lines() {
    yield "one";
  },
};

describe("names and inferred types", () => {
  test("streams are their own kind: not methods, not notifications", () => {
    expectTypeOf<StreamNames<S>>().toEqualTypeOf<"events" | "numbers">();
    expectTypeOf<MethodNames<S>>().toEqualTypeOf<"build" | "status">();
    expectTypeOf<NotificationNames<S>>().toEqualTypeOf<"say">();
    expectTypeOf<StreamNames<C>>().toEqualTypeOf<"lines">();
  });

  test("a consumer gets the item schema's output; a producer yields its input", () => {
    expectTypeOf<InferItem<S, "events">>().toEqualTypeOf<{ at: Date; text: string }>();
    expectTypeOf<InferHandlerItem<S, "events">>().toEqualTypeOf<{ at: string; text: string }>();
    expectTypeOf<InferItem<S, "numbers">>().toEqualTypeOf<number>();
    expectTypeOf<InferItem<C, "lines">>().toEqualTypeOf<string>();
  });

  test("progress: the caller gets the output, the handler reports the input, never without one", () => {
    expectTypeOf<InferProgress<S, "build">>().toEqualTypeOf<{ pct: number; step: number }>();
    expectTypeOf<InferHandlerProgress<S, "build">>().toEqualTypeOf<{
      pct: number;
      step: string;
    }>();
    expectTypeOf<InferProgress<S, "status">>().toBeNever();
    expectTypeOf<InferHandlerProgress<S, "status">>().toBeNever();
  });

  test("stream params are optional exactly when the schema allows it", () => {
    expectTypeOf<StreamArgs<S, "events">>().toEqualTypeOf<
      [params: { since: string }, options?: StreamOptions]
    >();
    expectTypeOf<[]>().toExtend<StreamArgs<S, "numbers">>();
    expectTypeOf<[]>().not.toExtend<StreamArgs<S, "events">>();
    // A stream declared without params takes none, as a method without params does.
    expectTypeOf<InferParams<S, "numbers">>().toEqualTypeOf<undefined>();
    expectTypeOf<Parameters<Handlers<S, C>["numbers"]>[0]>().toEqualTypeOf<undefined>();
  });
});

describe("a client's streams and progress", () => {
  test("client.stream infers the item type and checks params and names", () => {
    const typeOnly = async () => {
      const client = await connect(app, "unix:/tmp/ezipc-two-way-types.sock", {
        handlers: clientHandlers,
      });
      expectTypeOf(client).toEqualTypeOf<Client<S>>();
      const events = client.stream("events", { since: "2025-01-01T00:00:00Z" });
      expectTypeOf(events).toEqualTypeOf<AsyncIterable<{ at: Date; text: string }>>();
      for await (const event of events) {
        expectTypeOf(event.at).toEqualTypeOf<Date>();
        expectTypeOf(event.text).toEqualTypeOf<string>();
      }
      expectTypeOf(client.stream("numbers")).toEqualTypeOf<AsyncIterable<number>>();
      const controller = new AbortController();
      client.stream("numbers", undefined, { window: 8, signal: controller.signal, timeout: 1_000 });

      // @ts-expect-error the caller sends the codec's input (an ISO string), not a Date
      client.stream("events", { since: new Date() });
      // @ts-expect-error events needs its params
      client.stream("events");
      // @ts-expect-error build is a method, not a stream
      client.stream("build", { target: "x" });
      // @ts-expect-error events is a stream: it cannot be called
      await client.call("events", { since: "2025-01-01T00:00:00Z" });
      // @ts-expect-error lines is on the client half: the server does not serve it
      client.stream("lines", { file: "a" });
      // @ts-expect-error numbers takes no params
      client.stream("numbers", { n: 1 });
      // @ts-expect-error window is a number
      client.stream("numbers", undefined, { window: "8" });
      // @ts-expect-error items are numbers, not strings
      for await (const n of client.stream("numbers")) expectTypeOf(n).toEqualTypeOf<string>();
    };
    expectTypeOf(typeOnly).toBeFunction();
  });

  test("onProgress receives the progress schema's output type", () => {
    const typeOnly = async (client: Client<S>) => {
      await client.call(
        "build",
        { target: "app" },
        {
          onProgress: (value) => {
            expectTypeOf(value).toEqualTypeOf<{ pct: number; step: number }>();
          },
          timeout: 60_000,
        },
      );
      expectTypeOf<NonNullable<CallOptions<InferProgress<S, "build">>["onProgress"]>>()
        .parameter(0)
        .toEqualTypeOf<{ pct: number; step: number }>();
      await client.call(
        "build",
        { target: "app" },
        // @ts-expect-error step arrives transformed to a number, not the string that was sent
        { onProgress: (value: { pct: number; step: string }) => value },
      );
      // A method without progress offers a listener that can receive nothing.
      expectTypeOf<NonNullable<CallOptions<InferProgress<S, "status">>["onProgress"]>>()
        .parameter(0)
        .toBeNever();
    };
    expectTypeOf(typeOnly).toBeFunction();
  });
});

describe("a server's two-way handlers", () => {
  test("ctx.peer offers only the client half: call, notify and stream", () => {
    const typeOnly = () =>
      createServer(app, {
        ...serverHandlers,
        build: async ({ target }, ctx) => {
          expectTypeOf(ctx.peer).toEqualTypeOf<RemoteApi<C>>();
          const ok = await ctx.peer.call("confirm", { question: `build ${target}?` });
          expectTypeOf(ok).toEqualTypeOf<boolean>();
          await ctx.peer.notify("notice", { text: "building" });
          for await (const line of ctx.peer.stream("lines", { file: "log" })) {
            expectTypeOf(line).toEqualTypeOf<string>();
          }
          // @ts-expect-error status is on the server half: the client does not serve it
          await ctx.peer.call("status");
          // @ts-expect-error build is on the server half
          await ctx.peer.call("build", { target });
          // @ts-expect-error say is the server's notification
          await ctx.peer.notify("say", { text: "x" });
          // @ts-expect-error numbers is the server's stream
          ctx.peer.stream("numbers");
          // @ts-expect-error notice is a notification: it cannot be called
          await ctx.peer.call("notice", { text: "x" });
          // @ts-expect-error question must be a string
          await ctx.peer.call("confirm", { question: 1 });
          return { ok };
        },
      });
    expectTypeOf(typeOnly).toBeFunction();
  });

  test("a stream handler yields the item schema's input type", () => {
    const typeOnly = () => {
      createServer(app, {
        ...serverHandlers,
        async *events({ since }, ctx) {
          expectTypeOf(since).toEqualTypeOf<Date>();
          expectTypeOf(ctx.signal).toEqualTypeOf<AbortSignal>();
          expectTypeOf(ctx.peer).toEqualTypeOf<RemoteApi<C>>();
          yield { at: "2025-01-01T00:00:00Z", text: "ok" };
        },
        // Returning any AsyncIterable works too, sync or async.
        numbers: () => ({
          async *[Symbol.asyncIterator]() {
            yield 1;
          },
        }),
      });
      createServer(app, {
        ...serverHandlers,
        // @ts-expect-error the producer yields the codec's input (a string), not a Date
        async *events() {
          yield { at: new Date(), text: "no" };
        },
      });
      createServer(app, {
        ...serverHandlers,
        // @ts-expect-error items are numbers
        async *numbers() {
          yield "1";
        },
      });
      createServer(app, {
        ...serverHandlers,
        // @ts-expect-error a stream handler returns an AsyncIterable, not a value
        numbers: () => 1,
      });
    };
    expectTypeOf(typeOnly).toBeFunction();
  });

  test("a client's stream handler is typed from the client half", () => {
    const typeOnly = async () => {
      await connect(app, "unix:/tmp/x.sock", {
        handlers: {
          ...clientHandlers,
          async *lines({ file }, ctx) {
            expectTypeOf(file).toEqualTypeOf<string>();
            expectTypeOf(ctx.peer).toEqualTypeOf<RemoteApi<S>>();
            yield file;
          },
        },
      });
      await connect(app, "unix:/tmp/x.sock", {
        handlers: {
          ...clientHandlers,
          // @ts-expect-error lines yields strings
          async *lines() {
            yield 1;
          },
        },
      });
    };
    expectTypeOf(typeOnly).toBeFunction();
  });

  test("ctx.progress takes the progress input type, and nothing when none is declared", () => {
    type BuildCtx = Parameters<Handlers<S, C>["build"]>[1];
    type StatusCtx = Parameters<Handlers<S, C>["status"]>[1];
    expectTypeOf<BuildCtx>().toEqualTypeOf<HandlerContext<C, { pct: number; step: string }>>();
    expectTypeOf<BuildCtx["progress"]>()
      .parameter(0)
      .toEqualTypeOf<{ pct: number; step: string }>();
    expectTypeOf<StatusCtx["progress"]>().parameter(0).toBeNever();
    expectTypeOf<BuildCtx["deadline"]>().toEqualTypeOf<number | undefined>();

    const typeOnly = () =>
      createServer(app, {
        ...serverHandlers,
        build: (_params, ctx) => {
          ctx.progress({ pct: 50, step: "compile" });
          // @ts-expect-error the handler reports the transform's input: step is a string
          ctx.progress({ pct: 50, step: 7 });
          // @ts-expect-error pct is required
          ctx.progress({ step: "link" });
          return { ok: true };
        },
        status: (_params, ctx) => {
          // @ts-expect-error status declares no progress: ctx.progress takes never
          ctx.progress({ pct: 1 });
          // @ts-expect-error not even undefined
          ctx.progress(undefined);
          return "idle";
        },
      });
    expectTypeOf(typeOnly).toBeFunction();
  });
});

describe("a server's connections", () => {
  test("connections, broadcast and events are typed with the client half", () => {
    const typeOnly = async (server: Server<S, C>) => {
      const [first] = server.connections;
      if (first !== undefined) {
        expectTypeOf(first).toEqualTypeOf<Connection<C>>();
        expectTypeOf(first.peer).toEqualTypeOf<RemoteApi<C>>();
        expectTypeOf(first.id).toEqualTypeOf<string>();
        expectTypeOf(first.remoteAddress).toEqualTypeOf<string>();
        expectTypeOf(first.runningCount).toEqualTypeOf<number>();
        expectTypeOf(first.peer.stream("lines", { file: "a" })).toEqualTypeOf<
          AsyncIterable<string>
        >();
      }
      expectTypeOf(server.broadcast("notice", { text: "hi" })).toEqualTypeOf<Promise<number>>();
      // @ts-expect-error confirm is a method: it cannot be broadcast
      await server.broadcast("confirm", { question: "?" });
      // @ts-expect-error say is the server's own notification
      await server.broadcast("say", { text: "x" });
      // @ts-expect-error text must be a string
      await server.broadcast("notice", { text: 1 });
      server.on("connect", (connection) => {
        expectTypeOf(connection).toEqualTypeOf<Connection<C>>();
      });
      server.on("disconnect", (connection, error) => {
        expectTypeOf(connection).toEqualTypeOf<Connection<C>>();
        expectTypeOf(error).toEqualTypeOf<Error | undefined>();
      });
    };
    expectTypeOf(typeOnly).toBeFunction();
  });
});
