import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type Client,
  connect,
  createServer,
  defineContract,
  ErrorCodes,
  FrameTooLargeError,
  method,
  notification,
  RpcError,
  type Server,
} from "ezipc";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";

// Large params and results take their own paths: sent in parts (never joined into one
// string), received across many socket chunks into one buffer, decoded as Latin-1 when
// ASCII. These tests run them through the public API over real sockets.

const api = defineContract({
  server: {
    echo: method({ params: z.tuple([z.string()]), result: z.string() }),
    repeat: method({
      params: z.object({ text: z.string(), times: z.number() }),
      result: z.string(),
    }),
    note: notification({ params: z.object({ text: z.string() }) }),
  },
});

const KINDS = ["unix", "tcp"] as const;
const LIMIT = 256 * 1024;

let dir: string;
let server: Server<typeof api.server, typeof api.client>;
let client: Client<typeof api.server> | undefined;
let noted: ((text: string) => void) | undefined;

async function start(kind: (typeof KINDS)[number]): Promise<void> {
  server = createServer(
    api,
    {
      echo: ([text]) => text,
      repeat: ({ text, times }) => text.repeat(times),
      note: ({ text }) => noted?.(text),
    },
    { maxFrameBytes: LIMIT },
  );
  await server.listen(kind === "unix" ? `unix:${join(dir, "s.sock")}` : "tcp://127.0.0.1:0");
  client = await connect(api, server.address, { maxFrameBytes: LIMIT });
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "ezipc-large-"));
});

afterEach(async () => {
  await client?.close();
  client = undefined;
  noted = undefined;
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe.each(KINDS)("large payloads over %s", (kind) => {
  it.each([
    ["ASCII", "abcdefgh".repeat(25_000)],
    ["multi-byte", "é€😀ß".repeat(15_000)],
    ["JSON-escaped", '"\\\n\t\u0001'.repeat(10_000)],
  ])("a %s string of ~200 KB makes the round trip exactly", async (_name, text) => {
    await start(kind);
    const [a, b] = await Promise.all([
      client!.call("echo", [text]),
      client!.call("echo", ["small"]),
    ]);
    expect(a).toBe(text);
    expect(b).toBe("small");
  });

  it("a large notification arrives exactly", async () => {
    await start(kind);
    const text = "n".repeat(200_000);
    const arrived = new Promise<string>((resolve) => {
      noted = resolve;
    });
    await client!.notify("note", { text });
    expect(await arrived).toBe(text);
  });

  it("params over the peer's frame limit reject with FrameTooLargeError; nothing is sent, the connection keeps working", async () => {
    await start(kind);
    const error = await client!.call("echo", ["x".repeat(LIMIT)]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FrameTooLargeError);
    expect(client!.pendingCount).toBe(0);
    expect(await client!.call("echo", ["still here"])).toBe("still here");
  });

  it("a result over the caller's frame limit answers -32001 instead of the result; the connection keeps working", async () => {
    await start(kind);
    const error = await client!
      .call("repeat", { text: "y".repeat(1024), times: 300 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RpcError);
    expect((error as RpcError).code).toBe(ErrorCodes.FrameTooLarge);
    expect(await client!.call("repeat", { text: "ok", times: 2 })).toBe("okok");
  });
});
