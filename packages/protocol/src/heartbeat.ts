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

/**
 * Watches one connection for silence: after `interval` ms without a received byte it
 * sends `rpc.ping`; when neither the answer nor any other byte arrives within `timeout`,
 * it calls `onDead`. It reads when bytes last arrived from the transport
 * (`lastReceived`), so a busy connection costs it nothing; a dead one is found at most
 * `interval + timeout` ms after its last byte. With `gate`, it pings only while `gate()`
 * is true.
 */
export class Heartbeat {
  readonly #interval: number;
  readonly #timeout: number;
  readonly #ping: (timeout: number) => Promise<unknown>;
  readonly #onDead: (error: ConnectionClosedError) => void;
  readonly #gate: (() => boolean) | undefined;
  readonly #lastReceived: () => number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;

  constructor(
    options: Required<HeartbeatOptions>,
    ping: (timeout: number) => Promise<unknown>,
    onDead: (error: ConnectionClosedError) => void,
    lastReceived: () => number,
    gate?: () => boolean,
  ) {
    this.#interval = Math.max(1, options.interval);
    this.#timeout = Math.max(1, options.timeout);
    this.#ping = ping;
    this.#onDead = onDead;
    this.#gate = gate;
    this.#lastReceived = lastReceived;
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
    this.#timer = setTimeout(this.#tick, delay);
    // A heartbeat must never be what keeps a process alive.
    (this.#timer as { unref?: () => void }).unref?.();
  }

  #tick = (): void => {
    this.#timer = undefined;
    // Not (yet) allowed to ping this peer (a plain JSON-RPC client): look again later.
    if (this.#gate !== undefined && !this.#gate()) {
      this.#arm(this.#interval);
      return;
    }
    const silent = Date.now() - this.#lastReceived();
    if (silent < this.#interval) {
      this.#arm(this.#interval - silent);
      return;
    }
    const sent = Date.now();
    this.#ping(this.#timeout).then(
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
        this.#onDead(
          new ConnectionClosedError(
            `No answer to rpc.ping within ${this.#timeout} ms after ${this.#interval} ms of ` +
              "silence (heartbeat): the peer is unresponsive; connection closed",
          ),
        );
      },
    );
  };
}
