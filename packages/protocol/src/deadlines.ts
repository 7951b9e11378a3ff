/** Something that expires at a deadline unless it settled first. */
export interface Expiring {
  /** Whether it settled already (its deadline no longer matters). */
  readonly settled: boolean;
  /** Called once the deadline passed, if it had not settled. */
  expire(): void;
}

interface Lane {
  /** Deadlines in insertion order; with one duration per lane, also in expiry order. */
  readonly at: number[];
  readonly items: Expiring[];
  head: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * One timer structure for every pending call of a peer, instead of a timer (and a promise
 * wrapper) per call. Calls are grouped in lanes by their timeout; within a lane deadlines
 * arrive in order, so adding is a push, and each lane needs only one timer, armed for its
 * earliest deadline. Settled calls are not searched for and removed: each `add` first
 * drops the settled calls at the front of its lane (calls mostly settle in the order they
 * were made), which keeps both the hot path O(1) and the memory bounded by the calls
 * actually pending.
 */
export class Deadlines {
  readonly #lanes = new Map<number, Lane>();

  /** Schedules `item.expire()` in `ms` milliseconds. */
  add(ms: number, item: Expiring): void {
    let lane = this.#lanes.get(ms);
    if (lane === undefined) {
      lane = { at: [], items: [], head: 0, timer: undefined };
      this.#lanes.set(ms, lane);
    }
    const items = lane.items;
    let head = lane.head;
    while (head < items.length && items[head]!.settled) head++;
    if (head > 64 && head * 2 > items.length) {
      lane.at.splice(0, head);
      items.splice(0, head);
      head = 0;
    }
    lane.head = head;
    lane.at.push(Date.now() + ms);
    items.push(item);
    if (lane.timer === undefined) this.#arm(ms, lane, ms);
  }

  /** Cancels every timer (the connection is gone; pending calls were settled otherwise). */
  clear(): void {
    for (const lane of this.#lanes.values()) {
      if (lane.timer !== undefined) clearTimeout(lane.timer);
    }
    this.#lanes.clear();
  }

  #arm(ms: number, lane: Lane, delay: number): void {
    lane.timer = setTimeout(() => this.#fire(ms, lane), delay);
    // A pending call's timer must not keep a process alive on its own.
    (lane.timer as { unref?: () => void }).unref?.();
  }

  #fire(ms: number, lane: Lane): void {
    lane.timer = undefined;
    const now = Date.now();
    let head = lane.head;
    const expired: Expiring[] = [];
    while (head < lane.at.length && lane.at[head]! <= now) {
      expired.push(lane.items[head]!);
      head++;
    }
    if (head === lane.at.length) {
      this.#lanes.delete(ms);
    } else {
      while (head < lane.at.length && lane.items[head]!.settled) head++;
      if (head === lane.at.length) {
        this.#lanes.delete(ms);
        for (const item of expired) if (!item.settled) item.expire();
        return;
      }
      if (head > 64 && head * 2 > lane.at.length) {
        lane.at.splice(0, head);
        lane.items.splice(0, head);
        head = 0;
      }
      lane.head = head;
      this.#arm(ms, lane, lane.at[head]! - now);
    }
    for (const item of expired) if (!item.settled) item.expire();
  }
}
