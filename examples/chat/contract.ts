// The chat contract: imported by the server and by every client.
import { defineContract, method, notification } from "ezipc";
import { z } from "zod";

const name = z.string().trim().min(1).max(32);

export const chat = defineContract({
  // Implemented by the server.
  server: {
    /** Enters the room under `name`; resolves to who is in it. */
    join: method({
      params: z.object({ name }),
      result: z.object({ members: z.array(z.string()) }),
    }),
    /** Says something to the room; resolves to how many members it reached. */
    say: method({
      params: z.object({ text: z.string().min(1).max(1_000) }),
      result: z.object({ delivered: z.number().int() }),
    }),
  },
  // Implemented by each client: the server pushes to them.
  client: {
    /** Someone said something (the sender gets its own message too). */
    message: notification({
      params: z.object({ seq: z.number().int(), from: z.string(), text: z.string() }),
    }),
    /** Someone entered or left the room. */
    presence: notification({
      params: z.object({ name: z.string(), event: z.enum(["joined", "left"]) }),
    }),
  },
});
