import { FramedSocket } from "../framing.js";
import { connectNet, listenNet } from "./net-util.js";
import type { Adapter, BenchClient, EchoParams, Endpoint, ServerState } from "./types.js";

// The floor: JSON-RPC 2.0 messages as JSON.stringify/parse over the shared framing, a Map of
// pending ids, and nothing else (no validation, no timers, no cancellation).

interface Message {
  jsonrpc: "2.0";
  id?: number;
  method?: string;
  params?: unknown;
  result?: unknown;
  error?: { code: number; message: string };
}

type Handler = (params: any) => unknown;

function handlers(state: ServerState): Map<string, Handler> {
  return new Map<string, Handler>([
    ["echo", (p: EchoParams) => p],
    ["echoText", (p: [string]) => p[0]],
    ["tick", () => state.tick()],
    ["count", () => state.count],
  ]);
}

export const adapter: Adapter = {
  async serve(listen: Endpoint, state: ServerState) {
    const methods = handlers(state);
    const net = await listenNet(listen, (socket) => {
      const framed: FramedSocket = new FramedSocket(socket, (text) => {
        const msg = JSON.parse(text) as Message;
        const handler = methods.get(msg.method ?? "");
        if (msg.id === undefined) {
          handler?.(msg.params);
          return;
        }
        const reply: Message = handler
          ? { jsonrpc: "2.0", id: msg.id, result: handler(msg.params) }
          : { jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: "Method not found" } };
        framed.send(JSON.stringify(reply));
      });
    });
    return { endpoint: net.endpoint, close: net.close };
  },

  async connect(endpoint: Endpoint): Promise<BenchClient> {
    const socket = await connectNet(endpoint);
    const pending = new Map<number, { resolve(v: any): void; reject(e: Error): void }>();
    let nextId = 1;
    const framed = new FramedSocket(socket, (text) => {
      const msg = JSON.parse(text) as Message;
      const entry = msg.id === undefined ? undefined : pending.get(msg.id);
      if (!entry || msg.id === undefined) return;
      pending.delete(msg.id);
      if (msg.error) entry.reject(new Error(msg.error.message));
      else entry.resolve(msg.result);
    });
    socket.on("close", () => {
      for (const entry of pending.values()) entry.reject(new Error("connection closed"));
      pending.clear();
    });
    const call = (method: string, params: unknown): Promise<any> =>
      new Promise((resolve, reject) => {
        const id = nextId++;
        pending.set(id, { resolve, reject });
        framed.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
      });
    return {
      echo: (p) => call("echo", p),
      echoText: (s) => call("echoText", [s]),
      tick: (n) => framed.send(JSON.stringify({ jsonrpc: "2.0", method: "tick", params: { n } })),
      drained: () => framed.drained(),
      close: async () => framed.close(),
    };
  },
};
