// The contract every reliability test speaks, in-process and across processes.
import { defineContract, method, notification, stream } from "ezipc";
import { z } from "zod";

export const contract = defineContract({
  server: {
    /** Answers `n` at once. */
    echo: method({ params: z.object({ n: z.number().int() }), result: z.number().int() }),
    /** Never answers on its own: the test (or a kill) decides how it ends. */
    hold: method({ params: z.object({ n: z.number().int() }), result: z.number().int() }),
    /** Reads a value: safe to run twice, so the contract says so. */
    read: method({
      params: z.object({ n: z.number().int() }),
      result: z.number().int(),
      idempotent: true,
    }),
    /** Which server answered (tells two servers on one address apart). */
    whoami: method({ result: z.string() }),
    log: notification({ params: z.object({ line: z.string() }) }),
    /** Yields 0 … count-1, then (with `hang`) waits forever. */
    ticks: stream({
      params: z.object({ count: z.number().int(), hang: z.boolean() }),
      item: z.number().int(),
    }),
  },
  client: {
    /** Served by the client: the server calls it to prove client handlers are in place. */
    hello: method({ params: z.object({ from: z.string() }), result: z.string() }),
  },
});

export type ServerSide = typeof contract.server;
export type ClientSide = typeof contract.client;
