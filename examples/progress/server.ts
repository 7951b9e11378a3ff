// The job server process: `tsx server.ts <address>`. Its handler honours ctx.signal, which
// aborts when the caller cancels (Ctrl-C), when the caller's deadline passes, or when the
// connection is lost. Stops when its parent says "stop".
import { createHash } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { createServer } from "ezipc";
import { jobs } from "./contract.js";

const [address] = process.argv.slice(2);
if (!address) throw new Error("usage: server.ts <address>");

let jobCount = 0;

const server = createServer(jobs, {
  async crunch({ items, stepMs }, ctx) {
    const job = ++jobCount;
    // The caller's timeout travelled with the request: ctx.deadline says when it stops waiting.
    const left =
      ctx.deadline === undefined ? "no" : `${Math.round((ctx.deadline - Date.now()) / 1000)} s`;
    console.log(`[server] job ${job}: ${items} items, ${left} deadline`);
    const hash = createHash("sha256");
    try {
      for (let done = 1; done <= items; done++) {
        // Rejects as soon as ctx.signal aborts: no work is done for a caller that left.
        await delay(stepMs, undefined, { signal: ctx.signal });
        hash.update(String(done));
        ctx.progress({ done, total: items });
      }
    } catch (error) {
      console.log(`[server] job ${job} stopped: ${(ctx.signal.reason as Error).message}`);
      throw ctx.signal.aborted ? ctx.signal.reason : error;
    }
    console.log(`[server] job ${job} finished`);
    return { processed: items, digest: hash.digest("hex").slice(0, 16) };
  },
});

await server.listen(address);
console.log(`[server] listening on ${server.address}`);
process.send?.("ready");

process.on("message", async (message) => {
  if (message === "stop") {
    await server.close();
    console.log("[server] closed");
    process.disconnect?.();
  }
});
// A parent that went away without saying "stop": close anyway, so this process exits.
process.on("disconnect", () => void server.close());
