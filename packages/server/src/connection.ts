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
  #heartbeat: Heartbeat | undefined;

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
    this.#heartbeat?.stop();
    this.#onClosed?.();
  }

  /**
   * @internal tells the client we are going away (`rpc.goaway`): it sends no new calls
   * here. Only a client known to speak ezipc is told: a plain JSON-RPC client would read
   * the notification as the answer to its own call.
   */
  goaway(reason?: string): void {
    const peer = this.#peer;
    if (peer !== undefined && !peer.closed && peer.speaksEzipc) peer.goaway(reason);
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
   * @internal starts the heartbeat (see `ServerOptions.heartbeat`): after `interval` ms
   * without a received byte it sends `rpc.ping`, and destroys the connection when neither
   * the answer nor any other byte arrives within `timeout` ms. It pings only a client that
   * has shown it speaks ezipc (`Peer.speaksEzipc`).
   */
  startHeartbeat(options: { interval: number; timeout: number }): void {
    const peer = this.#peer;
    const transport = this.#transport;
    if (peer === undefined || transport === undefined || peer.closed) return;
    if (transport.lastReceived === undefined) return;
    this.#heartbeat = new Heartbeat(options, peer, transport, true);
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
