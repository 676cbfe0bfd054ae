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

  /** Adds an item, or counts a drop when full (`undefined`: a drop the caller saw coming). */
  push(item: T | undefined): void {
    if (item === undefined || this.#items.length >= this.#max) this.#dropped++;
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

  /** Takes up to `size` items and sends them with the drop count; on failure they go back. */
  async flush(size: number, send: (items: T[], dropped: number) => Promise<unknown>): Promise<void> {
    if (this.#items.length === 0 && this.#dropped === 0) return;
    const batch = this.#items.splice(0, size);
    const dropped = this.#dropped;
    try {
      await send(batch, dropped);
      this.#dropped -= dropped;
    } catch {
      const room = this.#max - this.#items.length;
      this.#dropped += Math.max(0, batch.length - room);
      this.#items.unshift(...batch.slice(0, room));
    }
  }
}
