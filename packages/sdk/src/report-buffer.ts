/**
 * Decisions waiting to be sent, kept as the bytes of `writ.authz.v1.ReportRequest` messages: each
 * decision is copied once into a large chunk (field 1, length-delimited), and a chunk is sent as it
 * is. No object per decision: a queue of small Buffers, thousands a second, kept the garbage
 * collector of the agent busy. Used by the SDK's DecisionReporter and by the agent.
 *
 * Bounded by a count of decisions: when full, a decision is dropped and counted, and the count
 * travels in the next message (field 2). A message that fails goes back (still bounded), unless
 * the receiver will never take it: then its decisions are counted as dropped, not retried forever.
 */
import { ProtoError } from './proto.ts';

interface Chunk {
  buf: Buffer;
  used: number;
  count: number;
}

/** Bytes of `n` as a protobuf varint. */
function varintSize(n: number): number {
  let size = 1;
  while (n > 0x7f) (n = Math.floor(n / 128)), size++;
  return size;
}
function writeVarint(buf: Buffer, at: number, n: number): number {
  while (n > 0x7f) {
    buf[at++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[at++] = n;
  return at;
}

/** What to do with a message that failed: send it again later, or count its decisions as dropped. */
export type FailedMessage = 'retry' | 'drop';

export class ReportBuffer {
  readonly #max: number;
  #maxMessage: number;
  #chunks: Chunk[] = [];
  #count = 0;
  #dropped = 0;

  /** At most `max` decisions buffered; messages of at most `maxMessage` bytes. */
  constructor(max: number, maxMessage: number) {
    this.#max = max;
    this.#maxMessage = maxMessage;
  }

  get full(): boolean {
    return this.#count >= this.#max;
  }

  get stats(): { buffered: number; dropped: number } {
    return { buffered: this.#count, dropped: this.#dropped };
  }

  /** Smaller messages from now on (buffered ones are split again before they are sent). */
  set maxMessage(n: number) {
    this.#maxMessage = n;
  }
  get maxMessage(): number {
    return this.#maxMessage;
  }

  /** Counts drops that happened elsewhere (a reporter's own), to be sent with the next message. */
  countDropped(n: number): void {
    this.#dropped += n;
  }

  /** Adds one encoded `Decision` (copied: the caller may reuse its buffer). */
  push(decision: Buffer): void {
    if (this.#count >= this.#max) return void this.#dropped++;
    this.#append(decision);
    this.#count++;
  }

  #append(decision: Buffer): void {
    const need = 1 + varintSize(decision.length) + decision.length;
    let c = this.#chunks.at(-1);
    if (!c || c.used + need > c.buf.length) {
      if (c && c.used + need <= this.#maxMessage) {
        // Grow the last chunk (doubling, up to a message): a few decisions do not cost a megabyte.
        const bigger = Buffer.allocUnsafe(Math.min(this.#maxMessage, Math.max(c.buf.length * 2, c.used + need)));
        c.buf.copy(bigger, 0, 0, c.used);
        c.buf = bigger;
      } else {
        c = { buf: Buffer.allocUnsafe(Math.max(need, Math.min(this.#maxMessage, 16 * 1024))), used: 0, count: 0 };
        this.#chunks.push(c);
      }
    }
    c.buf[c.used++] = 0x0a; // field 1, length-delimited
    c.used = writeVarint(c.buf, c.used, decision.length);
    c.used += decision.copy(c.buf, c.used);
    c.count++;
  }

  /** Re-cuts chunks larger than a message (after `maxMessage` shrank). */
  #resplit(): void {
    if (!this.#chunks.some((c) => c.used > this.#maxMessage)) return;
    const old = this.#chunks;
    this.#chunks = [];
    for (const c of old) {
      for (let p = 0; p < c.used; ) {
        if (c.buf[p] !== 0x0a) throw new ProtoError('report buffer corrupt');
        let len = 0;
        let mul = 1;
        let q = p + 1;
        for (;;) {
          const b = c.buf[q++]!;
          len += (b & 0x7f) * mul;
          if ((b & 0x80) === 0) break;
          mul *= 128;
        }
        this.#append(c.buf.subarray(q, q + len));
        p = q + len;
      }
    }
  }

  /**
   * Sends what is buffered now (not what arrives meanwhile: under load that would keep a message
   * in flight all the time, each carrying only what arrived during the last round trip), one
   * message per chunk, the drop count in the first. Stops at the first failure; `failed` says
   * whether that message goes back or is dropped.
   */
  async drain(
    send: (message: Buffer, decisions: number) => Promise<unknown>,
    failed: (err: unknown, message: Buffer) => FailedMessage = () => 'retry',
  ): Promise<void> {
    this.#resplit();
    const chunks = this.#chunks;
    this.#chunks = [];
    if (chunks.length === 0 && this.#dropped > 0) chunks.push({ buf: Buffer.alloc(0), used: 0, count: 0 });
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i]!;
      const dropped = this.#dropped;
      const tail = dropped > 0 ? 1 + varintSize(dropped) : 0;
      let message = c.buf.subarray(0, c.used);
      if (tail) {
        message = c.used + tail <= c.buf.length ? c.buf.subarray(0, c.used + tail) : Buffer.concat([message, Buffer.alloc(tail)]);
        message[c.used] = 0x10; // field 2, varint
        writeVarint(message, c.used + 1, dropped);
      }
      try {
        await send(message, c.count);
        this.#count -= c.count;
        this.#dropped -= dropped;
      } catch (err) {
        if (failed(err, message) === 'drop') {
          this.#count -= c.count;
          this.#dropped += c.count;
          i++;
        }
        // The rest goes back in front of what arrived meanwhile, in order.
        this.#chunks = [...chunks.slice(i).filter((x) => x.count > 0), ...this.#chunks];
        return;
      }
    }
  }
}
