import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type Client,
  connect,
  createServer,
  defineContract,
  method,
  notification,
  type Server,
  stream,
  toOpenRpc,
} from "ezipc";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";

const api = defineContract({
  server: {
    write: method({
      params: z.object({ filename: z.string(), content: z.string().optional() }),
      result: z.object({ written: z.number().int() }),
    }),
    stat: method({ params: z.tuple([z.string()]), result: z.number(), idempotent: true }),
    build: method({ result: z.string(), progress: z.object({ pct: z.number() }) }),
    log: notification({ params: z.object({ line: z.string() }) }),
    tail: stream({ params: z.object({ file: z.string() }), item: z.object({ line: z.string() }) }),
  },
});

let dir: string;
let server: Server<typeof api.server, typeof api.client>;
let client: Client<typeof api.server> | undefined;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "ezipc-discover-"));
  server = createServer(api, {
    write: ({ content }) => ({ written: content?.length ?? 0 }),
    stat: () => 1,
    build: () => "ok",
    log: () => {},
    async *tail() {},
  });
  await server.listen(`unix:${join(dir, "s.sock")}`);
});

afterEach(async () => {
  await client?.close();
  client = undefined;
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("rpc.discover", () => {
  it("answers the OpenRPC document of the server's contract over a real socket", async () => {
    client = await connect(api, server.address);
    const doc = await client.discover();
    expect(doc).toEqual(toOpenRpc(api.server));
    expect(doc.openrpc).toBe("1.3.2");
    const byName = Object.fromEntries(doc.methods.map((m) => [m.name, m]));
    expect(Object.keys(byName)).toEqual(["write", "stat", "build", "log", "tail"]);
    expect(byName.write).toMatchObject({
      paramStructure: "by-name",
      params: [
        { name: "filename", schema: { type: "string" }, required: true },
        { name: "content", schema: { type: "string" }, required: false },
      ],
      "x-ezipc-kind": "method",
    });
    expect(byName.write?.result?.schema).toMatchObject({ type: "object", required: ["written"] });
    expect(byName.stat).toMatchObject({
      paramStructure: "by-position",
      params: [{ name: "arg0", schema: { type: "string" } }],
      "x-ezipc-idempotent": true,
    });
    expect(byName.build?.["x-ezipc-progress"]).toMatchObject({ type: "object" });
    expect(byName.log?.["x-ezipc-kind"]).toBe("notification");
    expect(byName.log?.result).toBeUndefined();
    expect(byName.tail).toMatchObject({
      "x-ezipc-kind": "stream",
      result: { name: "item", schema: { type: "object" } },
    });
    expect(client.pendingCount).toBe(0);
  });

  it("is not a method of the contract: the name stays reserved", () => {
    expect(() =>
      defineContract({ server: { "rpc.discover": method({ result: z.string() }) } }),
    ).toThrow(TypeError);
  });
});
