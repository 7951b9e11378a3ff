// Runs the progress example as its own processes, as a user would: main.ts end to end, and
// client.ts stopped with a real SIGINT (Ctrl-C).
import { type ChildProcess, fork, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));
const children: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, "exit");
      child.kill("SIGKILL");
      await exited;
    }
  }
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Collects a child's output as text. */
function output(child: ChildProcess): { readonly stdout: string; readonly stderr: string } {
  const out = { stdout: "", stderr: "" };
  child.stdout?.on("data", (chunk: Buffer) => {
    out.stdout += chunk.toString("utf8");
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    out.stderr += chunk.toString("utf8");
  });
  return out;
}

it("main.ts runs a job with progress, cancels another with SIGINT, and exits 0", async () => {
  const child = spawn(process.execPath, ["--import", "tsx", "examples/progress/main.ts"], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  const out = output(child);
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));

  expect({ code, stderr: out.stderr }).toEqual({ code: 0, stderr: "" });
  const progress = out.stdout.split("\n").filter((line) => line.startsWith("progress "));
  // Job 1: every step, in order, before its result.
  expect(progress.slice(0, 10).map((line) => line.split(" ")[1])).toEqual(
    Array.from({ length: 10 }, (_, i) => `${i + 1}/10`),
  );
  expect(out.stdout).toContain("[server] job 1: 10 items, 60 s deadline");
  expect(out.stdout).toMatch(/\[main\] job 1 result: processed 10, digest [0-9a-f]{16}/);
  // Job 2: cancelled after step 5; the server's handler saw its signal abort.
  expect(out.stdout).toContain("progress 5/1000");
  expect(out.stdout).toContain("[main] job 2 cancelled");
  expect(out.stdout).toContain("[server] job 2 stopped: The caller cancelled the call");
  expect(out.stdout).not.toContain("progress 1000/1000");
  expect(out.stdout).toContain("[main] server exited with code 0");
});

it("client.ts cancels its job on Ctrl-C (SIGINT) and the server's handler stops", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ezipc-progress-test-"));
  dirs.push(dir);
  const address = `unix:${join(dir, "jobs.sock")}`;
  const server = fork(join(root, "examples/progress/server.ts"), [address], {
    cwd: root,
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "pipe", "pipe", "ipc"],
  });
  children.push(server);
  const serverOut = output(server);
  const [ready] = await once(server, "message");
  expect(ready).toBe("ready");

  const client = spawn(
    process.execPath,
    ["--import", "tsx", "examples/progress/client.ts", address, "100000"],
    { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
  );
  children.push(client);
  const clientOut = output(client);
  // Ctrl-C once the job is visibly under way.
  await new Promise<void>((resolve) => {
    const onData = () => {
      if (clientOut.stdout.includes("progress 3/100000")) {
        client.stdout!.off("data", onData);
        resolve();
      }
    };
    client.stdout!.on("data", onData);
  });
  client.kill("SIGINT");
  const code = await new Promise<number | null>((resolve) => client.once("close", resolve));

  expect({ code, stderr: clientOut.stderr }).toEqual({ code: 130, stderr: "" });
  expect(clientOut.stdout).toContain("[client] cancelled");
  expect(clientOut.stdout).not.toContain("[client] result");

  // The server saw the cancellation: its handler's ctx.signal aborted.
  server.send("stop");
  await once(server, "exit");
  expect(serverOut.stdout).toContain("[server] job 1 stopped: The caller cancelled the call");
  expect(serverOut.stderr).toBe("");
});
