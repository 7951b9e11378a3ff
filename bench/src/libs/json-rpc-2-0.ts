import { JSONRPCClient, JSONRPCServer } from "json-rpc-2.0";
import { FramedSocket } from "../framing.js";
import { connectNet, listenNet } from "./net-util.js";
import type { Adapter, BenchClient, EchoParams, Endpoint, ServerState } from "./types.js";

// json-rpc-2.0 is transport-agnostic: it hands us payload objects to send and takes parsed
// ones back, so it runs over the same 4-byte framing as RAW.

export const adapter: Adapter = {
  async serve(listen: Endpoint, state: ServerState) {
    const server = new JSONRPCServer();
    server.addMethod("echo", (p) => p as EchoParams);
    server.addMethod("echoText", (p) => (p as [string])[0]);
    server.addMethod("tick", () => {
      state.tick();
    });
    server.addMethod("count", () => state.count);
    const net = await listenNet(listen, (socket) => {
      const framed: FramedSocket = new FramedSocket(socket, (text) => {
        void server.receive(JSON.parse(text)).then((response) => {
          if (response) framed.send(JSON.stringify(response));
        });
      });
    });
    return { endpoint: net.endpoint, close: net.close };
  },

  async connect(endpoint: Endpoint): Promise<BenchClient> {
    const socket = await connectNet(endpoint);
    const client: JSONRPCClient = new JSONRPCClient((payload) => {
      framed.send(JSON.stringify(payload));
    });
    const framed = new FramedSocket(socket, (text) => client.receive(JSON.parse(text)));
    socket.on("close", () => client.rejectAllPendingRequests("connection closed"));
    return {
      echo: (p) => client.request("echo", p) as Promise<EchoParams>,
      echoText: (s) => client.request("echoText", [s]) as Promise<string>,
      tick: (n) => client.notify("tick", { n }),
      drained: () => framed.drained(),
      close: async () => framed.close(),
    };
  },
};
