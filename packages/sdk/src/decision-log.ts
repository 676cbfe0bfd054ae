/**
 * Reports in-process decisions to the agent (writ.authz.v1.DecisionLog/Report), which forwards them
 * to the server's decision log. Bounded: when the buffer is full a decision is dropped and counted,
 * and the count travels with the next batch. Never blocks a request.
 */
import { BoundedBatch } from './bounded-batch.ts';
import { GRPC_STATUS, GrpcClient, GrpcError } from './grpc.ts';
import { Writer } from './proto.ts';

const REPORT = '/writ.authz.v1.DecisionLog/Report';
/** Under the agent's 64 KiB limit for one request message, with room for framing. */
const MAX_MESSAGE = 60 * 1024;
/** Answers that mean the agent will never take this batch. */
const PERMANENT = new Set<number>([GRPC_STATUS.INVALID_ARGUMENT, GRPC_STATUS.RESOURCE_EXHAUSTED, GRPC_STATUS.PERMISSION_DENIED]);

export interface ReportedDecision {
  readonly id: string;
  readonly at: number;
  readonly from: string;
  readonly to: string;
  readonly action: string;
  readonly decision: string;
  readonly reason: string;
  readonly rule: string;
  readonly policyRevision: number;
  readonly latencyNs: number;
}

export class DecisionReporter {
  readonly #grpc: GrpcClient;
  /** Decisions already encoded (at record time: the cost is spread over requests, not paid in one go). */
  readonly #buffer: BoundedBatch<Buffer>;
  readonly #timer: NodeJS.Timeout;
  #flushing = false;

  constructor(endpoint: string, opts: { maxBuffered?: number; flushMs?: number } = {}) {
    this.#grpc = new GrpcClient(endpoint);
    this.#buffer = new BoundedBatch(opts.maxBuffered ?? 20_000);
    // Small, frequent batches: no pause in the caller's event loop, and 10,000 decisions a second get through.
    this.#timer = setInterval(() => void this.flush(), opts.flushMs ?? 200);
    this.#timer.unref();
  }

  record(d: ReportedDecision): void {
    if (this.#buffer.full) return this.#buffer.countDropped(1); // not worth encoding
    const m = new Writer(256).string(1, d.id).string(3, d.from).string(4, d.to).string(5, d.action).string(6, d.decision).string(7, d.reason).string(8, d.rule);
    if (d.at > 0) m.enumValue(2, d.at);
    if (d.policyRevision > 0) m.enumValue(9, d.policyRevision);
    if (d.latencyNs > 0) m.enumValue(10, Math.round(d.latencyNs));
    this.#buffer.push(m.finish());
  }

  get stats(): { buffered: number; dropped: number } {
    return this.#buffer.stats;
  }

  /**
   * Sends what is buffered, in messages under the agent's 64 KiB request limit (a bigger one is
   * refused, and retrying it would refuse it forever). A refused batch is counted as dropped.
   */
  async flush(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      for (let i = 0; i < 50; i++) {
        const sent = await this.#buffer.flush(2000, (batch, dropped) => {
          const w = new Writer(MAX_MESSAGE);
          for (const m of batch) w.message(1, m);
          if (dropped > 0) w.enumValue(2, dropped);
          return this.#grpc.unary(REPORT, w.finish(), { 'workload.spiffe.io': 'true' });
        }, { weigh: (m) => m.length + 4, maxWeight: MAX_MESSAGE, permanent: (err) => err instanceof GrpcError && PERMANENT.has(err.code) });
        if (sent === 0 || this.#buffer.stats.buffered === 0) break;
      }
    } finally {
      this.#flushing = false;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
    this.#grpc.close();
  }
}
