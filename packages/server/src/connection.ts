import type { Duplex } from "node:stream";
import type { ConnectionInfo, ContractSide, PeerCertificate, RemoteApi } from "@ezipc/contract";
import { errorResponse, Heartbeat, type Peer, type Transport } from "@ezipc/protocol";

/**
 * One client's connection to a server: who it is, and `peer` for typed server → client
 * calls. It is also the `ctx.connection` of every handler call that arrives on it.
 */
export class Connection<TClient extends ContractSide = ContractSide> implements ConnectionInfo {
  /** Unique id of the connection within this server process (`c1`, `c2`, …). */
  readonly id: string;
  /** `unix`, `pipe`, `tcp` or `tls`. */
  readonly transport: string;
  /** `host:port` of the client for TCP/TLS; the listening address for Unix sockets and pipes. */
  readonly remoteAddress: string;
  /** Whether the client proved knowledge of the server's `authKey`. */
  readonly authenticated: boolean;
  /** The client's verified TLS certificate (mutual TLS), if it presented one. */
  readonly peerCertificate: PeerCertificate | undefined;
  #peer: Peer | undefined;
  #transport: Transport | undefined;
  #closed: Promise<void> | undefined;
  #onClosed: (() => void) | undefined;
  #watch: Watch | undefined;

  /** @internal created by the server for each accepted socket */
  constructor(
    id: string,
    transport: string,
    remoteAddress: string,
    authenticated: boolean,
    peerCertificate?: PeerCertificate,
  ) {
    this.peerCertificate = peerCertificate;
    this.id = id;
    this.transport = transport;
    this.remoteAddress = remoteAddress;
    this.authenticated = authenticated;
  }

  /** @internal */
  attach(peer: Peer, transport: Transport): void {
    this.#peer = peer;
    this.#transport = transport;
  }

  /** Typed calls and notifications to this client (the contract's `client` half). */
  get peer(): RemoteApi<TClient> {
    return this.#peer! as unknown as RemoteApi<TClient>;
  }

  /** Calls from this client awaiting our handlers. */
  get runningCount(): number {
    return this.#peer?.runningCount ?? 0;
  }

  /** Whether the connection is gone. */
  get closed(): boolean {
    return this.#peer?.closed ?? true;
  }

  /** @internal stop taking new calls (graceful shutdown) */
  drain(): void {
    this.#peer?.drain();
  }

  /** @internal */
  whenIdle(): Promise<void> {
    return this.#peer?.whenIdle() ?? Promise.resolve();
  }

  /** @internal called by the server once the peer reports the close */
  markClosed(): void {
    this.#watch?.stop();
    this.#onClosed?.();
  }

  /**
   * @internal tells the client we are going away (`rpc.goaway`): it sends no new calls
   * here. Only a client known to speak ezipc is told: a plain JSON-RPC client would read
   * the notification as the answer to its own call.
   */
  goaway(reason?: string): void {
    const peer = this.#peer;
    if (peer !== undefined && !peer.closed && this.#watch?.ezipc === true) peer.goaway(reason);
  }

  /**
   * @internal graceful shutdown ran out of time: tells the client why its calls still
   * in flight are about to fail (an error with id null, which becomes the cause of the
   * `ConnectionClosedError` those calls reject with).
   */
  cutOff(message: string, code: number): void {
    const transport = this.#transport;
    if (transport === undefined || transport.closed || this.runningCount === 0) return;
    try {
      transport.send(JSON.stringify(errorResponse(null, code, message)));
    } catch {
      // Closing anyway.
    }
  }

  /**
   * @internal starts watching what the client sends: whether it speaks ezipc, and, with a
   * heartbeat, whether it went silent (see `ServerOptions.heartbeat`)
   */
  watch(socket: Duplex, heartbeat: { interval: number; timeout: number } | undefined): void {
    const peer = this.#peer;
    const transport = this.#transport;
    if (peer === undefined || transport === undefined || peer.closed) return;
    this.#watch = new Watch(socket, peer, transport, heartbeat);
  }

  /** Closes this connection gracefully; resolves once it is closed. */
  close(): Promise<void> {
    const peer = this.#peer;
    if (peer === undefined || peer.closed) return Promise.resolve();
    this.#closed ??= new Promise<void>((resolve) => {
      this.#onClosed = resolve;
      this.#transport!.close();
    });
    return this.#closed;
  }
}

/** `"method":"rpc.` and ezipc's request extension member: bytes only an ezipc peer sends. */
const EZIPC_MARKERS = [Buffer.from('"method":"rpc.'), Buffer.from('"ezipc":{')];

/**
 * Watches what one client sends. It notes whether the client speaks ezipc (it sent an
 * `rpc.*` message or ezipc's request metadata): only such a client is sent unsolicited
 * messages (`rpc.ping`, `rpc.goaway`), which a plain JSON-RPC client would read as the
 * answer to its own call. With a heartbeat, after `interval` ms without a received byte
 * it sends `rpc.ping`, and destroys the connection when neither the answer nor any other
 * byte arrives within `timeout` ms.
 */
class Watch {
  readonly #socket: Duplex;
  readonly #heartbeat: Heartbeat | undefined;
  /** Whether the client has shown it speaks ezipc. */
  ezipc = false;

  constructor(
    socket: Duplex,
    peer: Peer,
    transport: Transport,
    heartbeat: { interval: number; timeout: number } | undefined,
  ) {
    this.#socket = socket;
    this.#heartbeat =
      heartbeat === undefined
        ? undefined
        : new Heartbeat(
            heartbeat,
            (timeout) => peer.ping(timeout),
            (error) => transport.destroy(error),
            () => this.ezipc,
          );
    socket.on("data", this.#onData);
  }

  stop(): void {
    this.#heartbeat?.stop();
    this.#socket.off("data", this.#onData);
  }

  #onData = (chunk: Buffer | string): void => {
    this.#heartbeat?.touch();
    if (!this.ezipc && typeof chunk !== "string") {
      this.ezipc = EZIPC_MARKERS.some((marker) => chunk.includes(marker));
      // Known, and nothing else to watch for: stop looking at every chunk.
      if (this.ezipc && this.#heartbeat === undefined) this.#socket.off("data", this.#onData);
    }
  };
}
