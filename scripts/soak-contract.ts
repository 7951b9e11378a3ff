// The contract of the soak test (scripts/soak.ts and scripts/soak-server.ts).
import { defineContract, method, notification } from "ezipc";
import { z } from "zod";

const token = z.object({ token: z.number().int() });

export const soakContract = defineContract({
  server: {
    /** Not idempotent: the server reports every execution; a second one would be a bug. */
    echo: method({ params: token, result: z.number().int() }),
    /** Idempotent: the client may send it again after a lost connection. */
    read: method({ params: token, result: z.number().int(), idempotent: true }),
    /** Answers after `ms` milliseconds: keeps calls in flight when the faults strike. */
    slow: method({
      params: z.object({ token: z.number().int(), ms: z.number().int().min(0).max(1_000) }),
      result: z.number().int(),
    }),
    note: notification({ params: token }),
  },
});
