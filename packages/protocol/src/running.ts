import type { Context } from "./context.js";
import type { RequestId } from "./message.js";
import { SlotTable } from "./slots.js";

/**
 * The handlers of a peer that outlived the tick they started in: requests by the caller's
 * id (so `rpc.cancel` and stream credit find them), notifications by a number of our own;
 * all of them so a lost connection aborts them. Number ids (what ezipc and most JSON-RPC
 * peers send) and our own numbers go to {@link SlotTable}s, which stay cheap for the GC
 * under one insert and one delete per call; string ids to a `Map`.
 */
export class RunningCalls {
  readonly #byNumber = new SlotTable<Context>();
  readonly #anonymous = new SlotTable<Context>();
  #byString: Map<string, Context> | undefined;
  #nextSlot = 1;

  /** The running request with this id. */
  get(id: RequestId): Context | undefined {
    return typeof id === "number" ? this.#byNumber.get(id) : this.#byString?.get(id);
  }

  /** Registers a running handler (by `ctx.id`, or a number of ours for a notification). */
  add(ctx: Context): void {
    const id = ctx.id;
    if (id === undefined) {
      ctx.slot = this.#nextSlot++;
      this.#anonymous.set(ctx.slot, ctx);
    } else if (typeof id === "number") {
      this.#byNumber.set(id, ctx);
    } else {
      if (this.#byString === undefined) this.#byString = new Map();
      this.#byString.set(id, ctx);
    }
  }

  /** Unregisters a handler that ended. */
  delete(ctx: Context): void {
    const id = ctx.id;
    if (id === undefined) this.#anonymous.take(ctx.slot);
    else if (typeof id === "number") this.#byNumber.take(id);
    else this.#byString?.delete(id);
  }

  /** Every running handler. */
  values(): Context[] {
    const all = [...this.#byNumber.values(), ...this.#anonymous.values()];
    if (this.#byString !== undefined) all.push(...this.#byString.values());
    return all;
  }
}
