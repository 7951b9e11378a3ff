// A server process for scripts/soak.ts: `node --import tsx soak-server.ts <address>`.
// Messages from the parent: "stop" (graceful close, then exit), "drop" (close one random
// connection). To the parent: `{ ready }` once listening, `{ executed }` with the tokens
// of `echo` calls it ran (batched), so the parent can catch a call run twice.
import { createServer } from "ezipc";
import { soakContract } from "./soak-contract.js";

const address = process.argv[2];
if (address === undefined) throw new Error("usage: soak-server.ts <address>");

let executed: number[] = [];
const report = () => {
  if (executed.length > 0) process.send?.({ executed });
  executed = [];
};
setInterval(report, 50).unref();

const server = createServer(
  soakContract,
  {
    echo: ({ token }) => {
      executed.push(token);
      return token;
    },
    read: ({ token }) => token,
    slow: ({ token, ms }, ctx) =>
      new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => resolve(token), ms);
        ctx.signal.addEventListener(
          "abort",
          () => {
            clearTimeout(timer);
            reject(ctx.signal.reason);
          },
          { once: true },
        );
      }),
    note: () => {},
  },
  { heartbeat: { interval: 1_000, timeout: 1_000 } },
);
await server.listen(address);
process.send?.({ ready: server.address });

process.on("message", (message) => {
  if (message === "stop") {
    server.close({ timeout: 1_000 }).then(() => {
      // The last batch must reach the parent before we exit.
      process.send?.({ executed }, () => process.exit(0));
    });
  } else if (message === "drop") {
    const connections = server.connections;
    const victim = connections[Math.floor(Math.random() * connections.length)];
    void victim?.close();
  }
});
process.on("disconnect", () => process.exit(0));
