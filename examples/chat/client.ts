// A chat member. As a library (`joinChat`) it is what main.ts uses; as a program,
// `tsx client.ts <address> <name>` joins the room, sends each line typed on stdin and prints
// what the others say. Ctrl-D leaves.
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { type Client, connect } from "ezipc";
import { chat } from "./contract.js";

/** A message as members receive it. */
export interface ChatMessage {
  readonly seq: number;
  readonly from: string;
  readonly text: string;
}

/** A joined member: its client, and what it has received so far. */
export interface Member {
  readonly name: string;
  readonly client: Client<typeof chat.server>;
  readonly received: ChatMessage[];
  readonly members: string[];
}

/** Connects to the room at `address` and joins it as `name`. */
export async function joinChat(
  address: string,
  name: string,
  onMessage: (message: ChatMessage, member: Member) => void = () => {},
  onPresence: (who: string, event: "joined" | "left") => void = () => {},
): Promise<Member> {
  const received: ChatMessage[] = [];
  let member: Member | undefined;
  const client = await connect(chat, address, {
    handlers: {
      // Server → client notifications: handled as they arrive, in order.
      message(message) {
        received.push(message);
        if (member) onMessage(message, member);
      },
      presence({ name: who, event }) {
        onPresence(who, event);
      },
    },
  });
  const { members } = await client.call("join", { name });
  member = { name, client, received, members };
  return member;
}

// Run as a program: an interactive member.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [address, name] = process.argv.slice(2);
  if (!address || !name) throw new Error("usage: client.ts <address> <name>");
  const member = await joinChat(
    address,
    name,
    (m) => console.log(`${m.from}: ${m.text}`),
    (who, event) => console.log(`* ${who} ${event}`),
  );
  console.log(`* you are ${name}; in the room: ${member.members.join(", ")}`);
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim() !== "") await member.client.call("say", { text: line });
  }
  await member.client.close();
}
