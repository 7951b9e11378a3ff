import { ConnectionClosedError, RpcError, TimeoutError } from "@ezipc/contract";

/** The default heartbeat: a ping after 15 s without a byte from the server. */
export const DEFAULT_HEARTBEAT_INTERVAL = 15_000;
/** The default time the other side has to answer a heartbeat ping: 20 s (gRPC's keepalive timeout). */
export const DEFAULT_HEARTBEAT_TIMEOUT = 20_000;

/** Options of the heartbeat that detects a silent server. */
export interface HeartbeatOptions {
  /**
   * Milliseconds without receiving anything after which `rpc.ping` is sent.
   * @default 15_000
   */
  interval?: number;
  /**
   * Milliseconds the other side has to answer (or send anything at all); then the
   * connection is declared dead and destroyed.
   * @default 20_000
   */
  timeout?: number;
}

/** The side of a connection a {@link Heartbeat} pings (a `Peer`, or the client's link to one). */
export interface HeartbeatPeer {
  /** Sends `rpc.ping`; settles with the answer (any answer, even an error, proves life). */
  ping(timeout: number): Promise<unknown>;
  /** Whether the other side speaks ezipc (only then may a gated heartbeat ping it). */
  readonly speaksEzipc?: boolean;
}

/** The transport a {@link Heartbeat} watches and, when the other side is dead, destroys. */
export interface HeartbeatTransport {
  /** When bytes last arrived (`Date.now()`); without it every interval is silent. */
  readonly lastReceived?: number;
  destroy(error?: Error): void;
}

/**
 * Watches one connection for silence: after `interval` ms without a received byte it
 * sends `rpc.ping`; when neither the answer nor any other byte arrives within `timeout`,
 * it destroys the transport. It reads when bytes last arrived from the transport
 * (`lastReceived`), so a busy connection costs it nothing; a dead one is found at most
 * `interval + timeout` ms after its last byte. A `gated` heartbeat pings only while
 * `peer.speaksEzipc` is true (a server must not send a plain JSON-RPC client anything
 * unsolicited). It holds the peer and the transport themselves, not callbacks: a server
 * keeps one per idle connection, and each closure would cost memory there.
 */
export class Heartbeat {
  readonly #interval: number;
  readonly #timeout: number;
  readonly #peer: HeartbeatPeer;
  readonly #transport: HeartbeatTransport;
  readonly #gated: boolean;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;

  constructor(
    options: Required<HeartbeatOptions>,
    peer: HeartbeatPeer,
    transport: HeartbeatTransport,
    gated = false,
  ) {
    this.#interval = Math.max(1, options.interval);
    this.#timeout = Math.max(1, options.timeout);
    this.#peer = peer;
    this.#transport = transport;
    this.#gated = gated;
    this.#arm(this.#interval);
  }

  /** Stops watching (the connection closed). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(delay: number): void {
    if (this.#stopped) return;
    // The heartbeat rides along as the timer's argument: no closure per connection.
    this.#timer = setTimeout(Heartbeat.#fire, delay, this);
    // A heartbeat must never be what keeps a process alive.
    (this.#timer as { unref?: () => void }).unref?.();
  }

  #lastReceived(): number {
    return this.#transport.lastReceived ?? 0;
  }

  static #fire(heartbeat: Heartbeat): void {
    heartbeat.#tick();
  }

  #tick(): void {
    this.#timer = undefined;
    // Not (yet) allowed to ping this peer (a plain JSON-RPC client): look again later.
    if (this.#gated && this.#peer.speaksEzipc !== true) {
      this.#arm(this.#interval);
      return;
    }
    const silent = Date.now() - this.#lastReceived();
    if (silent < this.#interval) {
      this.#arm(this.#interval - silent);
      return;
    }
    const sent = Date.now();
    this.#peer.ping(this.#timeout).then(
      () => this.#arm(this.#interval),
      (error: unknown) => {
        if (this.#stopped || error instanceof ConnectionClosedError) return;
        // Any answer proves the peer alive, even an error (a plain JSON-RPC peer answers
        // rpc.ping with -32601); so does any byte that arrived while we waited.
        if (
          !(error instanceof TimeoutError) ||
          error instanceof RpcError ||
          this.#lastReceived() > sent
        ) {
          this.#arm(this.#interval);
          return;
        }
        this.stop();
        this.#transport.destroy(
          new ConnectionClosedError(
            `No answer to rpc.ping within ${this.#timeout} ms after ${this.#interval} ms of ` +
              "silence (heartbeat): the peer is unresponsive; connection closed",
          ),
        );
      },
    );
  }
}
