// The server process: writes files into a directory it owns.
import { writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { createServer, ErrorCodes, RpcError } from "ezipc";
import { files } from "./contract.js";

const [address, directory] = process.argv.slice(2);
if (!address || !directory) throw new Error("usage: server.ts <address> <directory>");

const server = createServer(files, {
  async write({ filename, content }) {
    // Never let a caller escape the directory.
    if (basename(filename) !== filename) {
      throw new RpcError(ErrorCodes.InvalidParams, "filename must not contain a path", {
        filename,
      });
    }
    await writeFile(join(directory, filename), content);
    return { written: Buffer.byteLength(content) };
  },
  log({ line }, ctx) {
    console.log(`[server] ${ctx.connection.id} says: ${line}`);
  },
});

await server.listen(address);
console.log(`[server] listening on ${server.address}`);
process.send?.("ready");

// Close gracefully when the parent asks.
process.on("message", async (message) => {
  if (message === "stop") {
    await server.close();
    console.log("[server] closed");
    process.disconnect?.();
  }
});
