import { createBirpc } from "birpc";
import { FramedSocket } from "../framing.js";
import { connectNet, listenNet } from "./net-util.js";
import type { Adapter, BenchClient, EchoParams, Endpoint, ServerState } from "./types.js";

// birpc is message-based: it posts values and takes them back; we give it JSON over the same
// 4-byte framing as RAW. It validates nothing, and keeps a timer per call (its 60 s default).

interface ServerFunctions {
  echo(p: EchoParams): EchoParams;
  echoText(s: string): string;
  tick(n: { n: number }): void;
  count(): number;
}

function channel(framed: () => FramedSocket) {
  let listener: ((data: any) => void) | undefined;
  return {
    post: (data: string) => framed().send(data),
    on: (fn: (data: any) => void) => {
      listener = fn;
    },
    serialize: (v: unknown) => JSON.stringify(v),
    deserialize: (v: string) => JSON.parse(v),
    deliver: (text: string) => listener?.(text),
  };
}

export const adapter: Adapter = {
  async serve(listen: Endpoint, state: ServerState) {
    const functions: ServerFunctions = {
      echo: (p) => p,
      echoText: (s) => s,
      tick: () => state.tick(),
      count: () => state.count,
    };
    const net = await listenNet(listen, (socket) => {
      const ch = channel(() => framed);
      const framed = new FramedSocket(socket, ch.deliver);
      const rpc = createBirpc<Record<string, never>, ServerFunctions>(functions, ch);
      socket.on("close", () => rpc.$close());
    });
    return { endpoint: net.endpoint, close: net.close };
  },

  async connect(endpoint: Endpoint): Promise<BenchClient> {
    const socket = await connectNet(endpoint);
    const ch = channel(() => framed);
    const framed = new FramedSocket(socket, ch.deliver);
    const rpc = createBirpc<ServerFunctions>({}, { ...ch, eventNames: ["tick"] });
    socket.on("close", () => rpc.$close());
    return {
      echo: (p) => rpc.echo(p),
      echoText: (s) => rpc.echoText(s),
      tick: (n) => rpc.tick.asEvent({ n }),
      drained: () => framed.drained(),
      close: async () => {
        rpc.$close();
        framed.close();
      },
    };
  },
};
