// `pnpm --filter @ezipc/example-chat start`: starts the chat server in a child process on a
// temporary Unix socket, connects three members, each says two things, and checks that
// every member received every message (broadcast), then shuts everything down.
import { fork } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type ChatMessage, joinChat, type Member } from "./client.js";

const NAMES = ["alice", "bob", "carol"];
const LINES = ["hello!", "bye!"];
const EXPECTED = NAMES.length * LINES.length;

const dir = mkdtempSync(join(tmpdir(), "ezipc-chat-"));
const address = `unix:${join(dir, "chat.sock")}`;
const child = fork(fileURLToPath(new URL("./server.ts", import.meta.url)), [address], {
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

  // Each member's promise resolves once it has received every message of the room.
  const everything = new Map<string, () => void>();
  const allReceived = NAMES.map(
    (name) => new Promise<void>((resolve) => everything.set(name, resolve)),
  );
  const onMessage = (m: ChatMessage, member: Member) => {
    console.log(`[${member.name}] ${m.from}: ${m.text}`);
    if (member.received.length === EXPECTED) everything.get(member.name)!();
  };

  const members: Member[] = [];
  for (const name of NAMES) {
    const member = await joinChat(address, name, onMessage);
    console.log(`[${name}] joined; in the room: ${member.members.join(", ")}`);
    members.push(member);
  }

  // Everyone talks at once.
  await Promise.all(
    members.map(async (member) => {
      for (const text of LINES) {
        const { delivered } = await member.client.call("say", { text: `${text} (${member.name})` });
        if (delivered !== NAMES.length) {
          throw new Error(`${member.name}'s message reached ${delivered} members, not 3`);
        }
      }
    }),
  );

  // A safety net for the demo only: a lost message must fail loudly, not hang.
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all(allReceived),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("not every message arrived within 10 s")), 10_000);
    }),
  ]);
  clearTimeout(timer);

  for (const member of members) {
    // Everyone saw the same messages in the same order (one server, one sequence).
    const seqs = member.received.map((m) => m.seq).join(",");
    console.log(`[${member.name}] received ${member.received.length}/${EXPECTED} messages`);
    if (seqs !== members[0]!.received.map((m) => m.seq).join(",")) {
      throw new Error(`${member.name} saw the messages in another order: ${seqs}`);
    }
  }

  await Promise.all(members.map((m) => m.client.close()));
  child.send("stop");
  const [code] = await once(child, "exit");
  console.log(`[main] server exited with code ${code}`);
  if (code !== 0) process.exitCode = 1;
  else console.log("[main] every member received every message");
} catch (error) {
  child.kill();
  throw error;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
