// The contract: imported by both the server and the client.

import { defineContract, method, notification } from "ezipc";
import { z } from "zod";

export const files = defineContract({
  server: {
    write: method({
      params: z.object({ filename: z.string().min(1), content: z.string() }),
      result: z.object({ written: z.number().int() }),
    }),
    log: notification({ params: z.object({ line: z.string() }) }),
  },
});
