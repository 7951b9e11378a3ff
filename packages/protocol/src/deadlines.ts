interface Lane {
  /** Deadlines in insertion order; with one duration per lane, also in expiry order. */
  readonly at: number[];
  /** The id each deadline belongs to. */
  readonly ids: number[];
  head: number;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * One timer structure for every pending call of a peer, instead of a timer (and a promise
 * wrapper) per call. Calls are grouped in lanes by their timeout; within a lane deadlines
 * arrive in order, so adding is a push, and each lane needs only one timer, armed for its
 * earliest deadline.
 *
 * Lanes hold ids (numbers), never the calls: a settled call is garbage at once, whatever
 * the lane still lists. Settled ids are not searched for and removed: each `add` first drops
 * the settled ids at the front of its lane (calls mostly settle in the order they were
 * made), which keeps both the hot path O(1) and the memory bounded by the calls actually
 * pending.
 */
export class Deadlines {
  readonly #lanes = new Map<number, Lane>();
  readonly #pending: (id: number) => boolean;
  readonly #expire: (id: number) => void;

  /**
   * @param pending whether the call with this id still awaits its response
   * @param expire called once a pending call's deadline passed
   */
  constructor(pending: (id: number) => boolean, expire: (id: number) => void) {
    this.#pending = pending;
    this.#expire = expire;
  }

  /** Schedules `expire(id)` in `ms` milliseconds, unless the call settles first. */
  add(ms: number, id: number): void {
    let lane = this.#lanes.get(ms);
    if (lane === undefined) {
      lane = { at: [], ids: [], head: 0, timer: undefined };
      this.#lanes.set(ms, lane);
    }
    const ids = lane.ids;
    let head = lane.head;
    while (head < ids.length && !this.#pending(ids[head]!)) head++;
    if (head > 64 && head * 2 > ids.length) {
      lane.at.splice(0, head);
      ids.splice(0, head);
      head = 0;
    }
    lane.head = head;
    lane.at.push(Date.now() + ms);
    ids.push(id);
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
    const { at, ids } = lane;
    let head = lane.head;
    const expired: number[] = [];
    while (head < at.length && at[head]! <= now) {
      expired.push(ids[head]!);
      head++;
    }
    while (head < at.length && !this.#pending(ids[head]!)) head++;
    if (head === at.length) {
      this.#lanes.delete(ms);
    } else {
      if (head > 64 && head * 2 > at.length) {
        at.splice(0, head);
        ids.splice(0, head);
        head = 0;
      }
      lane.head = head;
      this.#arm(ms, lane, at[head]! - now);
    }
    // An expiry may run user code (a rejection handler) that adds calls: the lane is
    // consistent before any of it runs.
    for (const id of expired) if (this.#pending(id)) this.#expire(id);
  }
}
