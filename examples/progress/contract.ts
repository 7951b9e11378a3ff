// The jobs contract: a long method that reports typed progress before its result.
import { defineContract, method } from "ezipc";
import { z } from "zod";

export const jobs = defineContract({
  server: {
    /** Hashes `items` chunks of work, one every `stepMs`; reports after each. */
    crunch: method({
      params: z.object({
        items: z.number().int().positive().max(1_000_000),
        stepMs: z.number().int().nonnegative().max(10_000).default(10),
      }),
      result: z.object({ processed: z.number().int(), digest: z.string() }),
      // The handler reports with ctx.progress(…); the caller listens with onProgress.
      progress: z.object({ done: z.number().int(), total: z.number().int() }),
    }),
  },
});
