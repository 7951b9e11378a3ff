import { RpcError, ValidationError, type Validator } from "@ezipc/contract";

/** The default flow-control window of a stream: 64 items. */
export const DEFAULT_STREAM_WINDOW = 64;

/** What a {@link StreamConsumer} needs from its peer. */
export interface StreamConsumerHooks {
  /** Grants the producer `n` more items (sends `rpc.stream.credit`). */
  grant(n: number): void;
  /** Tells the producer to stop (sends `rpc.cancel`) and forgets the stream. */
  cancel(): void;
}

/**
 * The consuming end of a stream: an async iterator over validated items. It holds at most
 * `window` items: the producer may only send what was granted, and credit is granted
 * back as the consumer takes items out, half a window at a time.
 */
export class StreamConsumer implements AsyncIterableIterator<unknown> {
  readonly method: string;
  readonly #window: number;
  readonly #item: Validator | undefined;
  readonly #hooks: StreamConsumerHooks;
  readonly #buffer: unknown[] = [];
  #waiter:
    | { resolve: (r: IteratorResult<unknown>) => void; reject: (e: Error) => void }
    | undefined;
  #ended = false;
  #error: Error | undefined;
  #taken = 0;
  #tail: Promise<void> | undefined;
  /** The producer's error, thrown once the items it sent before it were taken. */
  #endError: Error | undefined;

  constructor(
    method: string,
    window: number,
    item: Validator | undefined,
    hooks: StreamConsumerHooks,
  ) {
    this.method = method;
    this.#window = window;
    this.#item = item;
    this.#hooks = hooks;
  }

  /** Items received but not yet taken by the consumer (never more than the window). */
  get buffered(): number {
    return this.#buffer.length;
  }

  /** Whether the stream is over (ended, failed or left). */
  get finished(): boolean {
    return this.#ended || this.#error !== undefined;
  }

  /** An item arrived from the producer. */
  push(raw: unknown): void {
    if (this.finished) return;
    if (this.#buffer.length >= this.#window) {
      this.#fail(
        new Error(`Stream "${this.method}": the producer sent more than the window allows`),
      );
      return;
    }
    if (this.#item === undefined) {
      this.#deliver(raw);
      return;
    }
    const check = this.#item.check(raw);
    if (!(check instanceof Promise) && this.#tail === undefined) {
      this.#accept(check);
      return;
    }
    // Async refinements: keep items in order by chaining their checks.
    this.#tail = (this.#tail ?? Promise.resolve()).then(() =>
      Promise.resolve(check).then((r) => this.#accept(r)),
    );
  }

  #accept(r: Awaited<ReturnType<Validator["check"]>>): void {
    if (r.success) this.#deliver(r.data);
    else {
      this.#fail(
        new ValidationError(
          `Item of stream "${this.method}" does not match the contract`,
          r.issues,
          "item",
        ),
      );
    }
  }

  #deliver(value: unknown): void {
    if (this.finished) return;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      this.#took();
      w.resolve({ value, done: false });
    } else {
      this.#buffer.push(value);
    }
  }

  #took(): void {
    // Grant credit back in halves of the window: fewer messages than one per item, and
    // the producer never waits for a consumer that keeps up.
    if (++this.#taken >= Math.max(1, this.#window >> 1)) {
      const n = this.#taken;
      this.#taken = 0;
      this.#hooks.grant(n);
    }
  }

  /** The producer finished (the response arrived). */
  resolve(): void {
    const finish = () => {
      if (this.finished) return;
      this.#ended = true;
      if (this.#waiter && this.#buffer.length === 0) {
        const w = this.#waiter;
        this.#waiter = undefined;
        w.resolve({ value: undefined, done: true });
      }
    };
    if (this.#tail) this.#tail.then(finish);
    else finish();
  }

  /**
   * The stream failed. A producer's error response (an `RpcError`) comes after the items
   * it sent, so those are delivered first; a lost connection, an abort or a timeout end the
   * stream at once.
   */
  reject(error: Error): void {
    const fail = () => {
      if (error instanceof RpcError && this.#buffer.length > 0 && !this.finished) {
        this.#ended = true;
        this.#endError = error;
        return;
      }
      this.#fail(error);
    };
    if (this.#tail) this.#tail.then(fail);
    else fail();
  }

  #fail(error: Error): void {
    if (this.finished) return;
    this.#error = error;
    this.#buffer.length = 0;
    this.#hooks.cancel();
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.reject(error);
    }
  }

  next(): Promise<IteratorResult<unknown>> {
    if (this.#buffer.length > 0) {
      const value = this.#buffer.shift();
      if (this.#endError === undefined) this.#took();
      return Promise.resolve({ value, done: false });
    }
    if (this.#endError !== undefined) {
      this.#error = this.#endError;
      this.#endError = undefined;
    }
    if (this.#error) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** Leaving a `for await` loop early: the producer is told to stop. */
  return(): Promise<IteratorResult<unknown>> {
    this.#endError = undefined;
    if (!this.finished) {
      this.#ended = true;
      this.#buffer.length = 0;
      this.#hooks.cancel();
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
