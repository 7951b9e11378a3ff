import { defineContract, ErrorCodes, method } from "@ezipc/contract";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { createDispatchTable, createRemoteTable } from "./dispatch.js";
import { createMemoryTransportPair } from "./memory-transport.js";
import { Peer } from "./peer.js";

// An async refinement makes the params check asynchronous: work the peer counts as running.
// It holds until the test releases it, so `whenIdle` is asked while the check runs.
let checking: () => void = () => {};
let release: () => void = () => {};
const slowCheck = z.object({ n: z.number() }).refine(async (p) => {
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  checking();
  await held;
  return p.n > 0;
}, "n must be positive");

function checkStarted(): Promise<void> {
  return new Promise((resolve) => {
    checking = resolve;
  });
}
const api = defineContract({ server: { work: method({ params: slowCheck, result: z.number() }) } });
const connection = { id: "t", transport: "memory", remoteAddress: "", authenticated: false };

function pair(authorize?: () => Promise<boolean>) {
  const [a, b] = createMemoryTransportPair();
  const server = new Peer({
    transport: b,
    local: createDispatchTable(api.server, { work: ({ n }: { n: number }) => n }),
    remote: createRemoteTable(api.client),
    connection,
    ...(authorize && { authorize }),
  });
  const client = new Peer({
    transport: a,
    local: createDispatchTable(api.client, {}),
    remote: createRemoteTable(api.server),
    connection,
    validate: false, // let invalid params reach the server's async check
  });
  return { server, client };
}

describe("Peer.whenIdle after asynchronous checks", () => {
  it("resolves once an async params check failed (nothing else running)", async () => {
    const { server, client } = pair();
    const started = checkStarted();
    const call = client.call("work", { n: -1 });
    await started;
    expect(server.runningCount).toBe(1);
    const idle = server.whenIdle(5_000);
    release();
    await expect(call).rejects.toMatchObject({ code: ErrorCodes.InvalidParams });
    await expect(idle).resolves.toBe(true);
    expect(server.runningCount).toBe(0);
  });

  it("resolves once an async authorize hook refused the call", async () => {
    let decide: (v: boolean) => void = () => {};
    let asked: () => void = () => {};
    const authorizing = new Promise<void>((resolve) => {
      asked = resolve;
    });
    const { server, client } = pair(
      () =>
        new Promise<boolean>((resolve) => {
          decide = resolve;
          asked();
        }),
    );
    const started = checkStarted();
    const call = client.call("work", { n: 1 });
    await started;
    release();
    await authorizing;
    expect(server.runningCount).toBe(1);
    const idle = server.whenIdle(5_000);
    decide(false);
    await expect(call).rejects.toMatchObject({ code: ErrorCodes.Unauthorized });
    await expect(idle).resolves.toBe(true);
    expect(server.runningCount).toBe(0);
  });
});
