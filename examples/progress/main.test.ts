// Runs the progress example end to end as its own process, as a user would. main.ts sends
// itself a real SIGINT half-way through its second job: the same path as Ctrl-C in a terminal.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { afterEach, expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));
const children: ChildProcess[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, "exit");
      child.kill("SIGKILL");
      await exited;
    }
  }
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
