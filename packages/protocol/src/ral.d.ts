// The few platform globals the runtime-neutral core uses, declared for the `"types": []`
// build (tsconfig.common.json) that keeps Node APIs out of it. Node, Deno, Bun and browsers
// all provide them.
declare class TextEncoder {
  encode(input?: string): Uint8Array;
}
declare class TextDecoder {
  constructor(label?: string, options?: { fatal?: boolean });
  decode(input?: Uint8Array): string;
}
declare function queueMicrotask(callback: () => void): void;
declare function setTimeout<A extends unknown[]>(
  callback: (...args: A) => void,
  ms?: number,
  ...args: A
): unknown;
declare function clearTimeout(handle: unknown): void;
interface AbortSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
  throwIfAborted(): void;
}
declare class AbortController {
  readonly signal: AbortSignal;
  abort(reason?: unknown): void;
}
interface ErrorOptions {
  cause?: unknown;
}
