// `pnpm --filter @ezipc/example-progress start`: starts the job server in a child process on
// a temporary Unix socket, runs a job to the end with its progress, then runs a second one
// and presses "Ctrl-C" on it (sends this process SIGINT) half-way: the call is cancelled and
// the server's handler stops.
import { fork } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "ezipc";
import { abortOnCtrlC, runJob } from "./client.js";
import { jobs } from "./contract.js";

const dir = mkdtempSync(join(tmpdir(), "ezipc-progress-"));
const address = `unix:${join(dir, "jobs.sock")}`;
const child = fork(fileURLToPath(new URL("./server.ts", import.meta.url)), [address], {
  execArgv: ["--import", "tsx"],
  stdio: "inherit",
  // Its own process group: a real Ctrl-C in the terminal reaches this process (which
  // cancels the job) but not the server, which we stop cleanly ourselves.
  detached: true,
});

try {
  const [message] = (await Promise.race([
    once(child, "message"),
    once(child, "exit").then(() => {
      throw new Error("server exited before it was ready");
    }),
  ])) as [unknown];
  if (message !== "ready") throw new Error(`unexpected message from server: ${String(message)}`);
  const client = await connect(jobs, address);

  // 1. A job that runs to the end: progress, then the result.
  console.log("[main] job 1: 10 items, 60 s to finish");
  let ctrlC = abortOnCtrlC();
  // The 60 s timeout travels with the request: the handler's ctx.deadline knows it.
  const first = await runJob(client, 10, { signal: ctrlC.signal, timeout: 60_000 });
  ctrlC.dispose();
  if (first === "cancelled") {
    console.log("[main] cancelled by Ctrl-C");
  } else {
    console.log(`[main] job 1 result: processed ${first.processed}, digest ${first.digest}`);

    // 2. A job cancelled half-way, exactly as Ctrl-C would: SIGINT aborts the controller.
    console.log("[main] job 2: 1000 items, Ctrl-C after 5");
    ctrlC = abortOnCtrlC();
    const second = await runJob(client, 1_000, {
      signal: ctrlC.signal,
      onStep: (done) => {
        if (done === 5) process.kill(process.pid, "SIGINT");
      },
    });
    ctrlC.dispose();
    if (second !== "cancelled") throw new Error("job 2 should have been cancelled");
    console.log("[main] job 2 cancelled");
    if (client.pendingCount !== 0) throw new Error("a call is still pending");
  }

  await client.close();
  child.send("stop");
  const [code] = await once(child, "exit");
  console.log(`[main] server exited with code ${code}`);
  if (code !== 0) process.exitCode = 1;
} catch (error) {
  child.kill();
  throw error;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
