import { RpcSession, RpcTarget, type RpcTransport } from "capnweb";
import { FramedSocket } from "../framing.js";
import { connectNet, listenNet } from "./net-util.js";
import type { Adapter, BenchClient, EchoParams, Endpoint, ServerState } from "./types.js";

// capnweb speaks its own JSON message protocol through an `RpcTransport` (send a string,
// receive a string); this one carries those strings in the same 4-byte frames as RAW.

class FramedTransport implements RpcTransport {
  readonly framed: FramedSocket;
  private readonly queue: string[] = [];
  private waiter: { resolve(text: string): void; reject(e: Error): void } | undefined;
  private closed: Error | undefined;

  constructor(socket: import("node:net").Socket) {
    this.framed = new FramedSocket(socket, (text) => {
      const waiter = this.waiter;
      if (waiter) {
        this.waiter = undefined;
        waiter.resolve(text);
      } else this.queue.push(text);
    });
    socket.on("close", () => {
      this.closed = new Error("connection closed");
      this.waiter?.reject(this.closed);
      this.waiter = undefined;
    });
  }

  send(message: string): void {
    this.framed.send(message);
  }

  receive(): Promise<string> {
    const next = this.queue.shift();
    if (next !== undefined) return Promise.resolve(next);
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  abort(): void {
    this.framed.close();
  }
}

class BenchApi extends RpcTarget {
  readonly #state: ServerState;
  constructor(state: ServerState) {
    super();
    this.#state = state;
  }
  echo(p: EchoParams): EchoParams {
    return p;
  }
  echoText(s: string): string {
    return s;
  }
  tick(_p: { n: number }): void {
    this.#state.tick();
  }
  count(): number {
    return this.#state.count;
  }
}

export const adapter: Adapter = {
  async serve(listen: Endpoint, state: ServerState) {
    const api = new BenchApi(state);
    const net = await listenNet(listen, (socket) => {
      new RpcSession(new FramedTransport(socket), api);
    });
    return { endpoint: net.endpoint, close: net.close };
  },

  async connect(endpoint: Endpoint): Promise<BenchClient> {
    const socket = await connectNet(endpoint);
    const transport = new FramedTransport(socket);
    const session = new RpcSession<BenchApi>(transport);
    const api = session.getRemoteMain();
    return {
      echo: async (p) => (await api.echo(p)) as EchoParams,
      echoText: async (s) => (await api.echoText(s)) as string,
      // capnweb has no notifications: a call whose result is never pulled is its
      // fire-and-forget; disposing the promise releases it on the server.
      tick: (n) => {
        api.tick({ n })[Symbol.dispose]();
      },
      drained: () => transport.framed.drained(),
      close: async () => {
        api[Symbol.dispose]();
        transport.framed.close();
      },
    };
  },
};
