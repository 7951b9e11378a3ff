// A TCP proxy that injects faults between a client and a server: added latency, 1-byte
// slicing, a stall without FIN (a black hole), and a reset (RST).
import { once } from "node:events";
import { createConnection, createServer, type Server, type Socket } from "node:net";

/** How the proxy forwards bytes; may be changed while connections are open. */
export interface ProxyMode {
  /** Milliseconds each chunk is held before it is forwarded. @default 0 */
  latency?: number;
  /** Forward one byte per write, each in its own event-loop turn. @default false */
  slice?: boolean;
}

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  stalled: boolean;
}

/** A fault-injecting TCP proxy in front of `tcp://host:port`. */
export class FaultProxy {
  readonly #server: Server;
  readonly #pairs = new Set<Pair>();
  mode: ProxyMode = {};
  /** Socket writes made towards either side (slicing makes one per byte). */
  writes = 0;
  /** Connections accepted so far. */
  accepted = 0;

  private constructor(server: Server) {
    this.#server = server;
  }

  /** Starts a proxy on 127.0.0.1 (a free port) that forwards to `target` (a `tcp://` address). */
  static async start(target: string): Promise<FaultProxy> {
    const m = /^tcp:\/\/([^:]+):(\d+)$/.exec(target);
    if (m === null) throw new Error(`FaultProxy forwards to tcp:// addresses, got ${target}`);
    const server = createServer({ noDelay: true });
    const proxy = new FaultProxy(server);
    server.on("connection", (client) => proxy.#accept(client, m[1]!, Number(m[2])));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return proxy;
  }

  /** The address clients connect to. */
  get address(): string {
    const bound = this.#server.address();
    if (bound === null || typeof bound === "string") throw new Error("proxy is not listening");
    return `tcp://127.0.0.1:${bound.port}`;
  }

  /** Connections open through the proxy. */
  get open(): number {
    return this.#pairs.size;
  }

  /**
   * Stops forwarding on every open connection, in both directions, without closing
   * anything: bytes are swallowed, no FIN, no RST — a peer that went silent. New
   * connections are forwarded normally.
   */
  stall(): void {
    for (const pair of this.#pairs) pair.stalled = true;
  }

  /** Resets every open connection (RST to both sides). */
  reset(): void {
    for (const pair of this.#pairs) {
      pair.client.resetAndDestroy();
      pair.upstream.resetAndDestroy();
    }
  }

  /** Closes the proxy and every connection through it. */
  async close(): Promise<void> {
    for (const pair of this.#pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(client: Socket, host: string, port: number): void {
    this.accepted++;
    client.pause();
    const upstream = createConnection({ host, port, noDelay: true });
    const pair: Pair = { client, upstream, stalled: false };
    this.#pairs.add(pair);
    const drop = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    upstream.once("connect", () => {
      this.#forward(pair, client, upstream);
      this.#forward(pair, upstream, client);
      client.resume();
    });
  }

  /** Forwards `from` → `to` in order, applying the current mode. */
  #forward(pair: Pair, from: Socket, to: Socket): void {
    let chain = Promise.resolve();
    from.on("data", (chunk: Buffer) => {
      if (pair.stalled) return;
      const { latency = 0, slice = false } = this.mode;
      const due = Date.now() + latency;
      chain = chain.then(async () => {
        // Each chunk is held `latency` ms from its arrival (not from the previous chunk's).
        const wait = due - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        if (pair.stalled || to.destroyed) return;
        if (!slice) {
          this.writes++;
          to.write(chunk);
          return;
        }
        for (let i = 0; i < chunk.length; i++) {
          if (pair.stalled || to.destroyed) return;
          this.writes++;
          to.write(chunk.subarray(i, i + 1));
          // One byte per turn of the event loop: the receiver reads it alone.
          await new Promise((resolve) => setImmediate(resolve));
        }
      });
    });
  }
}
