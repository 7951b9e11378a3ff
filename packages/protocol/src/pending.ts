import type { Validator } from "@ezipc/contract";
import type { Expiring } from "./deadlines.js";
import type { RequestId } from "./message.js";
import type { StreamConsumer } from "./stream.js";

/** A call of ours awaiting its response; also the unit the deadline queue tracks. */
export class PendingCall implements Expiring {
  settled = false;
  /** The progress schema and listener, when the caller asked for progress. */
  progress:
    | { readonly check: Validator | undefined; readonly listener: (v: unknown) => void }
    | undefined = undefined;
  /** The consumer, when this is a stream. */
  consumer: StreamConsumer | undefined = undefined;
  signal: AbortSignal | undefined = undefined;
  onAbort: (() => void) | undefined = undefined;

  constructor(
    readonly id: RequestId,
    readonly method: string,
    readonly result: Validator | undefined,
    readonly resolve: (value: unknown) => void,
    readonly reject: (error: Error) => void,
    readonly timeout: number,
    readonly onExpire: (call: PendingCall) => void,
  ) {}

  expire(): void {
    this.onExpire(this);
  }
}

let capturedResolve: ((value: unknown) => void) | undefined;
let capturedReject: ((error: Error) => void) | undefined;
function captureExecutor(resolve: (value: unknown) => void, reject: (error: Error) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/**
 * A promise and its settle functions, without a closure per call: the executor is shared
 * and hands resolve/reject over through module state (Promise.withResolvers needs Node 22).
 */
export function deferred(): {
  promise: Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
} {
  const promise = new Promise<unknown>(captureExecutor);
  return { promise, resolve: capturedResolve!, reject: capturedReject! };
}
