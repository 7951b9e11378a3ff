// The chat server process: `tsx server.ts <address>`. Every message is broadcast to every
// connected member. Run by main.ts in a child process; stops when its parent says "stop".
import { type ConnectionInfo, createServer, ErrorCodes, RpcError, type Server } from "ezipc";
import { chat } from "./contract.js";

const [address] = process.argv.slice(2);
if (!address) throw new Error("usage: server.ts <address>");

/** Who is who: keyed by the connection, so a name leaves with its connection. */
const names = new Map<string, string>();
let seq = 0;

function nameOf(connection: ConnectionInfo): string {
  const name = names.get(connection.id);
  if (name === undefined) throw new RpcError(ErrorCodes.Unauthorized, "join the room first");
  return name;
}

// Annotated: the handlers use `server` (for broadcast) inside its own initializer.
const server: Server<typeof chat.server, typeof chat.client> = createServer(chat, {
  async join({ name }, ctx) {
    if ([...names.values()].includes(name)) {
      throw new RpcError(-32010, "name taken", { name });
    }
    names.set(ctx.connection.id, name);
    await server.broadcast("presence", { name, event: "joined" });
    return { members: [...names.values()] };
  },
  async say({ text }, ctx) {
    const from = nameOf(ctx.connection);
    // broadcast resolves to how many connections it reached.
    const delivered = await server.broadcast("message", { seq: ++seq, from, text });
    return { delivered };
  },
});

server.on("connect", (connection) => {
  console.log(`[server] ${connection.id} connected`);
});
server.on("disconnect", (connection) => {
  const name = names.get(connection.id);
  names.delete(connection.id);
  console.log(`[server] ${connection.id} disconnected${name ? ` (${name})` : ""}`);
  if (name !== undefined) void server.broadcast("presence", { name, event: "left" });
});

await server.listen(address);
console.log(`[server] chat room open on ${server.address}`);
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
