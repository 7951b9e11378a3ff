import type { Validator } from "@ezipc/contract";
import type { SlotTable } from "./slots.js";
import type { StreamConsumer } from "./stream.js";

/** How a pending call settles: a promise's functions, or a stream consumer's. */
export interface Settle {
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: Error) => void;
}

let capturedResolve: ((value: unknown) => void) | undefined;
let capturedReject: ((error: Error) => void) | undefined;
function captureExecutor(resolve: (value: unknown) => void, reject: (error: Error) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/** A call of ours awaiting its response (held in a {@link SlotTable} by its id). */
export class PendingCall {
  /** What the caller awaits (absent for a stream, which settles its consumer instead). */
  readonly promise: Promise<unknown> | undefined;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: Error) => void;
  /** The progress schema and listener, when the caller asked for progress. */
  progress:
    | { readonly check: Validator | undefined; readonly listener: (v: unknown) => void }
    | undefined = undefined;
  /** The consumer, when this is a stream. */
  consumer: StreamConsumer | undefined = undefined;
  signal: AbortSignal | undefined = undefined;
  onAbort: (() => void) | undefined = undefined;

  constructor(
    readonly id: number,
    readonly method: string,
    readonly result: Validator | undefined,
    readonly timeout: number,
    settle?: Settle,
  ) {
    if (settle === undefined) {
      // The executor is shared: no closure per call (Promise.withResolvers needs Node 22).
      this.promise = new Promise<unknown>(captureExecutor);
      this.resolve = capturedResolve!;
      this.reject = capturedReject!;
    } else {
      this.promise = undefined;
      this.resolve = settle.resolve;
      this.reject = settle.reject;
    }
  }
}
