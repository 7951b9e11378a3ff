/**
 * The defaults of reconnect backoff: gRPC's connection-backoff parameters
 * (https://github.com/grpc/grpc/blob/master/doc/connection-backoff.md).
 */
export const DEFAULT_BACKOFF = {
  /** Delay after the first failed attempt: 1 s. */
  initialDelay: 1_000,
  /** Factor each further delay grows by: 1.6. */
  multiplier: 1.6,
  /** Each delay is spread uniformly by ± this fraction of itself: 0.2. */
  jitter: 0.2,
  /** Largest delay before jitter: 120 s. */
  maxDelay: 120_000,
} as const;

/** The parameters of {@link Backoff}; every one has a default in {@link DEFAULT_BACKOFF}. */
export interface BackoffOptions {
  /** Delay after the first failed attempt, in ms. @default 1_000 */
  initialDelay?: number;
  /** Factor each further delay grows by. @default 1.6 */
  multiplier?: number;
  /** Each delay is spread uniformly by ± this fraction of itself. @default 0.2 */
  jitter?: number;
  /** Largest delay before jitter, in ms. @default 120_000 */
  maxDelay?: number;
}

/**
 * Exponential backoff with jitter, as gRPC computes it: the n-th delay is
 * `min(initialDelay × multiplier^(n-1), maxDelay)`, spread by `± jitter` of itself so that
 * clients that lost the same server do not all come back at the same instant.
 */
export class Backoff {
  readonly #initial: number;
  readonly #multiplier: number;
  readonly #jitter: number;
  readonly #max: number;
  readonly #random: () => number;
  #current: number;

  constructor(options: BackoffOptions = {}, random: () => number = Math.random) {
    this.#initial = nonNegative(options.initialDelay ?? DEFAULT_BACKOFF.initialDelay);
    this.#multiplier = Math.max(1, options.multiplier ?? DEFAULT_BACKOFF.multiplier);
    this.#jitter = Math.min(1, nonNegative(options.jitter ?? DEFAULT_BACKOFF.jitter));
    this.#max = Math.max(this.#initial, options.maxDelay ?? DEFAULT_BACKOFF.maxDelay);
    this.#random = random;
    this.#current = this.#initial;
  }

  /** The delay before the next attempt, in ms; each call grows the next one. */
  next(): number {
    const base = this.#current;
    this.#current = Math.min(base * this.#multiplier, this.#max);
    return Math.max(0, Math.round(base * (1 + this.#jitter * (2 * this.#random() - 1))));
  }

  /** Starts over from `initialDelay` (a connection was established and lasted). */
  reset(): void {
    this.#current = this.#initial;
  }
}

function nonNegative(value: number): number {
  return Number.isFinite(value) && value > 0 ? value : 0;
}
