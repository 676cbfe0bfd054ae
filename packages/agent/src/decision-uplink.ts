/**
 * Decisions on their way to the server's decision log: encoded `writ.authz.v1.Decision` messages
 * in a bounded buffer (a full buffer drops and counts; the count travels with the next message),
 * posted as `writ.authz.v1.ReportRequest` messages of at most 4 MiB, one flush at a time.
 */
import type { Logger } from 'pino';
import { isWritError } from '@writ/spiffe';
import { AGENT_PATHS } from '@writ/protocol';
import { ReportBuffer, encodeDecision, type ReportedDecision } from '@writ/sdk/internal';
import type { ServerApi } from './server-client.ts';

/** Posts the server refuses (401/403) wait this long at first, doubling up to the cap. */
const REFUSED_BACKOFF_MS = 1000;
const REFUSED_BACKOFF_MAX_MS = 60_000;
/** What the server will refuse whatever the retry: counted as dropped, not sent again forever. */
const HOPELESS = new Set(['ERR_FIELD_INVALID', 'ERR_BODY_TOO_LARGE', 'ERR_JSON_INVALID', 'ERR_PROTOBUF_INVALID']);

export class DecisionUplink {
  readonly #client: ServerApi;
  readonly #clock: () => number;
  readonly #log: Logger;
  readonly #buffer: ReportBuffer;
  #flushing: Promise<void> | undefined;
  /** While refused: not before this time, and the last wait. */
  #pausedUntil = 0;
  #backoff = 0;

  constructor(o: { client: ServerApi; clock: () => number; log: Logger; max: number }) {
    this.#client = o.client;
    this.#clock = o.clock;
    this.#log = o.log;
    this.#buffer = new ReportBuffer(o.max, 4 * 1024 * 1024);
  }

  /** A decision (encoded here) or an encoded `Decision` from a workload's report (copied as it is). */
  record(d: ReportedDecision | Buffer): void {
    if (this.#buffer.full) return this.#buffer.countDropped(1);
    this.#buffer.push(Buffer.isBuffer(d) ? d : encodeDecision(d));
  }

  countDropped(n: number): void {
    this.#buffer.countDropped(n);
  }

  get stats(): { buffered: number; dropped: number } {
    return this.#buffer.stats;
  }

  /** A new identity: what was refused may be taken now. */
  resume(): void {
    this.#pausedUntil = 0;
  }

  /**
   * One flush at a time: two in flight would each carry the same drop count (the buffer takes it
   * off only once a message is acknowledged) and the server would count it twice.
   */
  flush(): Promise<void> {
    if (this.#flushing || this.#clock() < this.#pausedUntil) return Promise.resolve();
    this.#flushing = this.#drain().finally(() => (this.#flushing = undefined));
    return this.#flushing;
  }

  async #drain(): Promise<void> {
    let refused = false;
    // Binary: the reporters' bytes go on unchanged, no JSON on either side.
    await this.#buffer.drain(
      async (message) => {
        await this.#client.call('POST', AGENT_PATHS.decisions, message);
        if (this.#backoff > 0) this.#log.info('the server takes decision reports again');
        this.#backoff = 0;
      },
      (err) => {
        if (isWritError(err) && HOPELESS.has(err.code)) return 'drop';
        refused = isWritError(err, 'ERR_UNAUTHENTICATED') || isWritError(err, 'ERR_FORBIDDEN');
        return 'retry';
      },
    );
    if (!refused) return;
    // Refused (evicted, banned): kept, and retried less and less often instead of four times a second.
    if (this.#backoff === 0) this.#log.warn('the server refuses decision reports from this agent; retrying with backoff');
    this.#backoff = Math.min(this.#backoff * 2 || REFUSED_BACKOFF_MS, REFUSED_BACKOFF_MAX_MS);
    this.#pausedUntil = this.#clock() + this.#backoff;
  }
}
