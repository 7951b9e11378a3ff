import { describe, expect, it } from "vitest";
import { Backoff, DEFAULT_BACKOFF } from "./backoff.js";

/** A random source that returns the given values in turn. */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}

describe("Backoff", () => {
  it("defaults to gRPC's connection-backoff parameters", () => {
    expect(DEFAULT_BACKOFF).toEqual({
      initialDelay: 1_000,
      multiplier: 1.6,
      jitter: 0.2,
      maxDelay: 120_000,
    });
  });

  it("grows by the multiplier up to the maximum (no jitter when random() is 0.5)", () => {
    const backoff = new Backoff({}, () => 0.5);
    const delays = Array.from({ length: 14 }, () => backoff.next());
    expect(delays.slice(0, 5)).toEqual([1_000, 1_600, 2_560, 4_096, 6_554]);
    // 1.6^11 × 1 s passes 120 s: capped from there on.
    expect(delays.slice(11)).toEqual([120_000, 120_000, 120_000]);
    expect(delays.every((d, i) => i === 0 || d >= delays[i - 1]!)).toBe(true);
  });

  it("spreads each delay uniformly by ± jitter of itself", () => {
    const low = new Backoff({}, () => 0);
    const high = new Backoff({}, () => 1);
    expect([low.next(), low.next()]).toEqual([800, 1_280]);
    expect([high.next(), high.next()]).toEqual([1_200, 1_920]);
    const random = new Backoff({}, Math.random);
    for (let i = 0; i < 200; i++) {
      const base = Math.min(1_000 * 1.6 ** i, 120_000);
      const delay = random.next();
      expect(delay).toBeGreaterThanOrEqual(Math.floor(base * 0.8));
      expect(delay).toBeLessThanOrEqual(Math.ceil(base * 1.2));
    }
  });

  it("starts over from the initial delay after reset()", () => {
    const backoff = new Backoff({ initialDelay: 10, multiplier: 2, jitter: 0 }, sequence(0.3));
    expect([backoff.next(), backoff.next(), backoff.next()]).toEqual([10, 20, 40]);
    backoff.reset();
    expect(backoff.next()).toBe(10);
  });

  it("sanitises nonsense options instead of looping hot or overflowing", () => {
    const backoff = new Backoff(
      { initialDelay: -5, multiplier: 0.5, jitter: 7, maxDelay: 50 },
      () => 1,
    );
    expect(backoff.next()).toBe(0);
    const capped = new Backoff({ initialDelay: 100, maxDelay: 10, jitter: 0 });
    expect([capped.next(), capped.next()]).toEqual([100, 100]);
  });
});
