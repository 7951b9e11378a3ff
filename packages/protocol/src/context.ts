import {
  type ConnectionInfo,
  ErrorCodes,
  type HandlerContext,
  type RemoteApi,
  RpcError,
} from "@ezipc/contract";
import type { LocalEntry } from "./dispatch.js";
import type { RequestId } from "./message.js";
import type { Peer } from "./peer.js";

/**
 * The `ctx` of one handler call, and all the peer tracks of it while it runs. Its `signal`
 * (and the deadline's timer) exist only once a handler reads it.
 */
export class Context implements HandlerContext<any, any> {
  readonly #peer: Peer;
  readonly #entry: LocalEntry;
  readonly connection: ConnectionInfo;
  readonly id: RequestId | undefined;
  /** When the caller stops waiting (Date.now() clock), from the request's `ezipc.timeout`. */
  deadline: number | undefined = undefined;
  /** @internal the abort controller, created when `signal` is first read */
  controller: AbortController | undefined = undefined;
  /** @internal why the call was aborted, once it was */
  reason: Error | undefined = undefined;
  /** @internal the deadline's timer, armed when `signal` is first read */
  timer: ReturnType<typeof setTimeout> | undefined = undefined;
  /** @internal the caller listens for progress */
  wantsProgress = false;
  /** @internal stream credit left */
  credit = 0;
  /** @internal the stream producer waiting for credit */
  wake: (() => void) | undefined = undefined;
  /** @internal in the peer's registry of running handlers */
  registered = false;
  /** @internal its number there, when it has no id (a notification) */
  slot = 0;

  constructor(
    peer: Peer,
    connection: ConnectionInfo,
    entry: LocalEntry,
    id: RequestId | undefined,
  ) {
    this.#peer = peer;
    this.connection = connection;
    this.#entry = entry;
    this.id = id;
  }

  get peer(): RemoteApi<any> {
    return this.#peer as unknown as RemoteApi<any>;
  }

  get method(): string {
    return this.#entry.name;
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      const controller = new AbortController();
      this.controller = controller;
      if (this.reason !== undefined) controller.abort(this.reason);
      else if (this.deadline !== undefined) {
        // The deadline timer exists only once someone can observe it: a handler that never
        // reads ctx.signal costs no timer.
        this.timer = setTimeout(
          () => {
            this.timer = undefined;
            abortInbound(this, new RpcError(ErrorCodes.DeadlineExceeded, "Deadline exceeded"));
          },
          Math.max(0, this.deadline - Date.now()),
        );
      }
    }
    return this.controller.signal;
  }

  progress(value: unknown): void {
    this.#peer.sendProgress(this.#entry, this.id, this, value);
  }
}

export function abortInbound(inbound: Context, reason: Error): void {
  if (inbound.reason !== undefined) return;
  inbound.reason = reason;
  if (inbound.timer !== undefined) clearTimeout(inbound.timer);
  inbound.controller?.abort(reason);
  const wake = inbound.wake;
  inbound.wake = undefined;
  wake?.();
}
