import type { Socket } from "node:net";
import {
  createMessageConnection,
  type MessageConnection,
  StreamMessageReader,
  StreamMessageWriter,
} from "vscode-jsonrpc/node";
import { connectNet, listenNet } from "./net-util.js";
import type { Adapter, BenchClient, EchoParams, Endpoint, ServerState } from "./types.js";

// vscode-jsonrpc over its own node stream reader/writer (Content-Length header framing, as in
// LSP) on the socket. Nagle is turned off on TCP, as for every row.

function connection(socket: Socket): MessageConnection {
  return createMessageConnection(new StreamMessageReader(socket), new StreamMessageWriter(socket));
}

export const adapter: Adapter = {
  async serve(listen: Endpoint, state: ServerState) {
    const net = await listenNet(listen, (socket) => {
      const conn = connection(socket);
      conn.onRequest("echo", (p: EchoParams) => p);
      conn.onRequest("echoText", (s: string) => s);
      conn.onRequest("count", () => state.count);
      conn.onNotification("tick", () => state.tick());
      conn.onError(() => {});
      socket.on("close", () => conn.dispose());
      conn.listen();
    });
    return { endpoint: net.endpoint, close: net.close };
  },

  async connect(endpoint: Endpoint): Promise<BenchClient> {
    const socket = await connectNet(endpoint);
    const conn = connection(socket);
    conn.onError(() => {});
    conn.listen();
    return {
      echo: (p) => conn.sendRequest<EchoParams>("echo", p),
      echoText: (s) => conn.sendRequest<string>("echoText", s),
      tick: (n) => conn.sendNotification("tick", { n }),
      close: async () => {
        conn.dispose();
        socket.destroy();
      },
    };
  },
};
