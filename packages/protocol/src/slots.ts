/** Small: a server holds one table per idle connection, and one call in flight needs one slot. */
const INITIAL_SLOTS = 4;
/** A table this large is dropped once it empties: an idle connection holds little. */
const KEEP_SLOTS = 1024;

/**
 * A map from numbers to values for keys that are mostly consecutive and short-lived: the
 * request ids of calls in flight (ours are a counter; most JSON-RPC peers count too).
 *
 * The value for `key` lives at `key & mask` of an array, with the key beside it in a
 * second array, so a lookup is an index and a compare, and removing clears the slot.
 *
 * Why not a `Map`: one insert and one delete per call make V8 rehash a map's backing table
 * every few hundred calls. Once that table lives in the old generation (on a long
 * connection it will), V8 allocates each new table there too, and a retired table keeps the
 * entries it held, and a link to its successor, until the next full GC. Every value that
 * was in the map at a rehash then outlives young-generation GCs and is promoted: in the
 * pipelined benchmark a client's GC share went from ~3 % to ~20 % of its CPU in about half
 * the runs (and its throughput to 0.6–0.7× RAW). Here nothing old refers to a removed
 * value.
 *
 * A slot taken by an older key still present (a long stream, a slow call, or keys chosen
 * to collide): the table doubles while it is over a quarter full; otherwise the
 * older entry moves to a small overflow `Map`, so neither one long-lived entry nor hostile
 * keys can make the table grow past eight slots per entry.
 */
export class SlotTable<T> {
  #keys: number[] | undefined;
  #values: (T | undefined)[] | undefined;
  #mask = 0;
  #size = 0;
  #overflow: Map<number, T> | undefined;

  /** Entries held. */
  get size(): number {
    return this.#size;
  }

  /** @internal slots allocated (for tests of the growth bound) */
  get capacity(): number {
    return this.#values?.length ?? 0;
  }

  /** The value for `key` (any key that is not a number finds nothing). */
  get(key: unknown): T | undefined {
    if (typeof key !== "number" || this.#values === undefined) return undefined;
    const index = key & this.#mask;
    if (this.#keys![index] === key) {
      const value = this.#values[index];
      if (value !== undefined) return value;
    }
    return this.#overflow === undefined ? undefined : this.#overflow.get(key);
  }

  /** Adds an entry; `key` must not be present already. */
  set(key: number, value: T): void {
    if (this.#values === undefined) this.#reset(INITIAL_SLOTS);
    let index = key & this.#mask;
    while (this.#values![index] !== undefined && this.#values!.length < 4 * (this.#size + 1)) {
      this.#grow();
      index = key & this.#mask;
    }
    const keys = this.#keys!;
    const values = this.#values!;
    const occupant = values[index];
    if (occupant !== undefined) {
      if (this.#overflow === undefined) this.#overflow = new Map();
      this.#overflow.set(keys[index]!, occupant);
    }
    keys[index] = key;
    values[index] = value;
    this.#size++;
  }

  /** Removes and returns the value for `key`, if present. */
  take(key: unknown): T | undefined {
    if (typeof key !== "number" || this.#values === undefined) return undefined;
    const index = key & this.#mask;
    let value = this.#values[index];
    if (value !== undefined && this.#keys![index] === key) {
      this.#values[index] = undefined;
    } else {
      value = this.#overflow?.get(key);
      if (value === undefined) return undefined;
      this.#overflow!.delete(key);
    }
    if (--this.#size === 0) {
      this.#overflow = undefined;
      if (this.#values.length > KEEP_SLOTS) {
        this.#keys = undefined;
        this.#values = undefined;
      }
    }
    return value;
  }

  /** Every value, in key order. */
  values(): T[] {
    const entries: [number, T][] = [];
    if (this.#values !== undefined) {
      for (let i = 0; i < this.#values.length; i++) {
        const value = this.#values[i];
        if (value !== undefined) entries.push([this.#keys![i]!, value]);
      }
    }
    if (this.#overflow !== undefined) entries.push(...this.#overflow);
    return entries.sort((a, b) => a[0] - b[0]).map((entry) => entry[1]);
  }

  /** Removes every entry. */
  clear(): void {
    this.#keys = undefined;
    this.#values = undefined;
    this.#overflow = undefined;
    this.#size = 0;
  }

  #reset(length: number): void {
    this.#keys = new Array<number>(length).fill(0);
    this.#values = new Array<T | undefined>(length).fill(undefined);
    this.#mask = length - 1;
  }

  /** Doubles the table; entries in distinct slots stay in distinct slots. */
  #grow(): void {
    const keys = this.#keys!;
    const values = this.#values!;
    this.#reset(values.length * 2);
    for (let i = 0; i < values.length; i++) {
      const value = values[i];
      if (value === undefined) continue;
      const index = keys[i]! & this.#mask;
      this.#keys![index] = keys[i]!;
      this.#values![index] = value;
    }
  }
}
