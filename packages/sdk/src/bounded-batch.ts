/**
 * A bounded buffer that ships in batches: when full, new items are dropped and counted; a failed
 * send puts the batch back (still bounded) and the drop count travels with the next batch.
 * Used by the agent's decision log and the SDK's DecisionReporter.
 */
export class BoundedBatch<T> {
  readonly #max: number;
  #items: T[] = [];
  #dropped = 0;

  constructor(max: number) {
    this.#max = max;
  }

  push(item: T): void {
    if (this.#items.length >= this.#max) this.#dropped++;
    else this.#items.push(item);
  }

  get full(): boolean {
    return this.#items.length >= this.#max;
  }

  /** Counts drops that happened elsewhere (a reporter's own), to be sent with the next batch. */
  countDropped(n: number): void {
    this.#dropped += n;
  }

  get stats(): { buffered: number; dropped: number } {
    return { buffered: this.#items.length, dropped: this.#dropped };
  }

  /**
   * Takes up to `size` items (and, with `weigh`, no more than `maxWeight` of them, but always at
   * least one) and sends them with the drop count. On failure they go back, unless `permanent`
   * says the receiver will never take them: then they are counted as dropped, not retried forever.
   * Returns how many items were sent.
   */
  async flush(size: number, send: (items: T[], dropped: number) => Promise<unknown>, opts: { weigh?: (item: T) => number; maxWeight?: number; permanent?: (err: unknown) => boolean } = {}): Promise<number> {
    if (this.#items.length === 0 && this.#dropped === 0) return 0;
    let n = Math.min(size, this.#items.length);
    if (opts.weigh && opts.maxWeight !== undefined) {
      let w = 0;
      for (let i = 0; i < n; i++) {
        w += opts.weigh(this.#items[i]!);
        if (w > opts.maxWeight && i > 0) {
          n = i;
          break;
        }
      }
    }
    const batch = this.#items.splice(0, n);
    const dropped = this.#dropped;
    try {
      await send(batch, dropped);
      this.#dropped -= dropped;
      return batch.length;
    } catch (err) {
      if (opts.permanent?.(err)) {
        this.#dropped += batch.length;
        return 0;
      }
      const room = this.#max - this.#items.length;
      this.#dropped += Math.max(0, batch.length - room);
      this.#items.unshift(...batch.slice(0, room));
      return 0;
    }
  }

  /**
   * Sends what is buffered now (not what arrives meanwhile), in as many batches as `flush` cuts it
   * into; stops at the first batch that fails. Under load, sending until empty would keep a batch
   * in flight all the time, each carrying only what arrived during the last round trip.
   */
  async drain(size: number, send: (items: T[], dropped: number) => Promise<unknown>, opts: Parameters<BoundedBatch<T>['flush']>[2] = {}): Promise<void> {
    let left = this.#items.length;
    do {
      const sent = await this.flush(size, send, opts);
      if (sent === 0) return;
      left -= sent;
    } while (left > 0);
  }
}
