// `pnpm demo`: starts the server in a child process on a temporary Unix socket, connects a
// client, writes a file through it, and shuts everything down.
import { fork } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, RpcError } from "ezipc";
import { files } from "./contract.js";

const dir = mkdtempSync(join(tmpdir(), "ezipc-demo-"));
const address = `unix:${join(dir, "files.sock")}`;
const child = fork(fileURLToPath(new URL("./server.ts", import.meta.url)), [address, dir], {
  execArgv: ["--import", "tsx"],
  stdio: "inherit",
});

try {
  const [message] = (await Promise.race([
    once(child, "message"),
    once(child, "exit").then(() => {
      throw new Error("server exited before it was ready");
    }),
  ])) as [unknown];
  if (message !== "ready") throw new Error(`unexpected message from server: ${String(message)}`);

  const client = await connect(files, address);
  console.log(`[client] connected to ${address}`);

  const { written } = await client.call("write", {
    filename: "hello.txt",
    content: "hi from ezipc\n",
  });
  console.log(`[client] write → { written: ${written} }`);
  console.log(
    `[client] file says: ${JSON.stringify(readFileSync(join(dir, "hello.txt"), "utf8"))}`,
  );

  await client.notify("log", { line: "done writing" });

  try {
    await client.call("write", { filename: "../escape.txt", content: "nope" });
  } catch (error) {
    if (!(error instanceof RpcError)) throw error;
    console.log(`[client] write ../escape.txt → RpcError ${error.code}: ${error.message}`);
  }

  await client.close();
  child.send("stop");
  const [code] = await once(child, "exit");
  console.log(`[client] server exited with code ${code}`);
  if (code !== 0) process.exitCode = 1;
} catch (error) {
  child.kill();
  throw error;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
