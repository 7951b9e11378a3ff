// Runs the chat example end to end as its own process, as a user would.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

const root = fileURLToPath(new URL("../..", import.meta.url));

it("three members each receive every message, and main exits 0", async () => {
  const child = spawn(process.execPath, ["--import", "tsx", "examples/chat/main.ts"], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => {
    stdout += chunk.toString("utf8");
  });
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString("utf8");
  });
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));

  expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
  for (const name of ["alice", "bob", "carol"]) {
    expect(stdout).toContain(`[${name}] received 6/6 messages`);
    // Every member saw every member's messages.
    for (const from of ["alice", "bob", "carol"]) {
      expect(stdout).toContain(`[${name}] ${from}: hello! (${from})`);
      expect(stdout).toContain(`[${name}] ${from}: bye! (${from})`);
    }
  }
  expect(stdout).toContain("[carol] joined; in the room: alice, bob, carol");
  expect(stdout).toContain("[main] every member received every message");
  expect(stdout).toContain("[server] closed");
});
