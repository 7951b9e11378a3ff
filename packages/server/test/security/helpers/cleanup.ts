import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test as base } from "vitest";

/**
 * What a test opened (servers, clients, sockets, child processes, temp dirs), released in
 * reverse order by {@link Cleanups.run} in `afterEach`, even when the test failed half-way.
 */
export class Cleanups {
  readonly #steps: (() => unknown)[] = [];

  /** Registers `step`; returns `value` so that `defer` can wrap a creation. */
  add<T>(value: T, step: (value: T) => unknown): T {
    this.#steps.push(() => step(value));
    return value;
  }

  /** A fresh temporary directory, removed at cleanup. */
  tempDir(prefix = "ezipc-sec-"): string {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    this.#steps.push(() => rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  /** Runs every step, newest first; a failing step does not stop the others. */
  async run(): Promise<void> {
    const errors: unknown[] = [];
    for (const step of this.#steps.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, "cleanup failed");
  }
}

/** A promise with its settle functions exposed. */
export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** Creates a {@link Deferred}. */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * Collects the errors a server's `onError` receives, and lets a test await the first one
 * that matches (already received or still to come) instead of sleeping.
 */
export class ErrorLog {
  readonly errors: unknown[] = [];
  readonly #waiters: { match: (error: unknown) => boolean; resolve: (e: unknown) => void }[] = [];

  /** The `onError` hook to pass to a server or client. */
  readonly hook = (error: unknown): void => {
    this.errors.push(error);
    for (const waiter of [...this.#waiters]) {
      if (waiter.match(error)) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        waiter.resolve(error);
      }
    }
  };

  /** The first error matching `match`, now or when it arrives. */
  next(match: (error: unknown) => boolean): Promise<unknown> {
    const seen = this.errors.find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => this.#waiters.push({ match, resolve }));
  }
}

/** Whether `error` is an instance of `type` whose message matches `pattern`. */
export function isError(type: abstract new (...args: never[]) => Error, pattern: RegExp) {
  return (error: unknown): boolean => error instanceof type && pattern.test(error.message);
}

/**
 * `it` with a per-test {@link Cleanups} as the `cleanups` fixture: what a test registers is
 * released when that test ends (the per-test form of `afterEach`, safe for concurrent tests).
 */
export const it = base.extend<{ cleanups: Cleanups }>({
  // biome-ignore lint/correctness/noEmptyPattern: vitest fixtures must destructure their context
  cleanups: async ({}, use) => {
    const cleanups = new Cleanups();
    try {
      await use(cleanups);
    } finally {
      await cleanups.run();
    }
  },
});

/**
 * `promise`, or a rejection naming `what` if it has not settled within `ms`. Only for
 * cleanup steps: a library bug that makes `close()` hang must fail the test that caused
 * it, not stall the whole run.
 */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/**
 * The sockets (TCP and Unix, both ends) this process holds open: a test runs client and
 * server in one process, so a count back at its baseline means nothing was left open.
 */
export function openSockets(): number {
  return process
    .getActiveResourcesInfo()
    .filter((r) => r === "TCPSocketWrap" || r === "PipeWrap" || r === "TLSWrap").length;
}
