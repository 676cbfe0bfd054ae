/**
 * The decision log's wire format and its first hop. Every decision is one protobuf
 * `writ.authz.v1.Decision` (packages/sdk/proto/writ_authz.proto), encoded once where it is made and
 * carried as those same bytes by the agent to the server, which decodes it once to store it.
 *
 * `DecisionReporter` reports in-process decisions to the agent (writ.authz.v1.DecisionLog/Report).
 * Bounded: when the buffer is full a decision is dropped and counted, and the count travels with
 * the next batch. Never blocks a request.
 */
import { isAscii } from 'node:buffer';
import { randomFillSync } from 'node:crypto';
import { ReportBuffer } from './report-buffer.ts';
import { GRPC_STATUS, GrpcClient, GrpcError } from './grpc.ts';
import { ProtoError, Writer } from './proto.ts';

const REPORT = '/writ.authz.v1.DecisionLog/Report';
/** One report message: under the 1 MiB the agent takes for a report, with room for framing. */
const MAX_MESSAGE = 1000 * 1024;
/** Agents of earlier versions take 64 KiB requests at most. */
const MAX_MESSAGE_OLD_AGENT = 60 * 1024;
/** Answers that mean the agent will never take this batch. */
const PERMANENT = new Set<number>([GRPC_STATUS.INVALID_ARGUMENT, GRPC_STATUS.RESOURCE_EXHAUSTED, GRPC_STATUS.PERMISSION_DENIED]);

export interface ReportedDecision {
  readonly id: string;
  /** Epoch milliseconds. */
  readonly at: number;
  /** '' when the caller presented no identity. */
  readonly from: string;
  readonly to: string;
  readonly action: string;
  readonly decision: string;
  readonly reason: string;
  readonly rule: string;
  readonly policyRevision: number;
  /** How long the decision took; 0 when unknown. */
  readonly latencyNs: number;
}

/** Longest accepted value of each string field, in bytes (longer ones make the record invalid). */
export const DECISION_LIMITS = { id: 64, from: 2048, to: 2048, action: 512, decision: 32, reason: 64, rule: 256 } as const;

// UUIDv7 (RFC 9562 section 5.7): 48-bit Unix milliseconds, then random bits. Time-ordered ids keep
// a log's primary-key index appending at its end instead of touching a random page per insert.
const pool = Buffer.allocUnsafe(10 * 512);
let poolAt = pool.length;
let prefixMs = -1;
let prefix = '';
/** The variant digit (binary 10xx) from a random hex digit. */
const VARIANT = '89ab89ab89ab89ab';

/** A new decision id: a UUIDv7 string, e.g. `019ad6c4-1f2e-7a3b-9c4d-5e6f708192a3`. */
export function newDecisionId(now = Date.now()): string {
  if (now !== prefixMs) {
    const t = now.toString(16).padStart(12, '0').slice(-12);
    prefix = `${t.slice(0, 8)}-${t.slice(8)}-7`;
    prefixMs = now;
  }
  if (poolAt === pool.length) randomFillSync(pool), (poolAt = 0);
  const h = pool.toString('hex', poolAt, (poolAt += 10)); // 80 random bits, 74 of them used
  return `${prefix}${h.slice(0, 3)}-${VARIANT[parseInt(h[3]!, 16)]}${h.slice(4, 7)}-${h.slice(7, 19)}`;
}

/** `v` cut to at most `max` UTF-8 bytes, on a character boundary (a long request path, say). */
function clip(v: string, max: number): string {
  if (v.length * 3 <= max || Buffer.byteLength(v) <= max) return v;
  const b = Buffer.from(v);
  let n = max;
  while (n > 0 && (b[n]! & 0xc0) === 0x80) n--; // not inside a multi-byte character
  return b.toString('utf8', 0, n);
}

/** One `writ.authz.v1.Decision` message; values longer than DECISION_LIMITS are cut to fit. */
export function encodeDecision(d: ReportedDecision): Buffer {
  return writeDecision(new Writer(256), d).finish();
}

function writeDecision(w: Writer, d: ReportedDecision): Writer {
  const L = DECISION_LIMITS;
  const m = w
    .string(1, clip(d.id, L.id))
    .string(3, clip(d.from, L.from))
    .string(4, clip(d.to, L.to))
    .string(5, clip(d.action, L.action))
    .string(6, clip(d.decision, L.decision))
    .string(7, clip(d.reason, L.reason))
    .string(8, clip(d.rule, L.rule));
  if (d.at > 0) m.enumValue(2, d.at);
  if (d.policyRevision > 0) m.enumValue(9, d.policyRevision);
  if (d.latencyNs > 0) m.enumValue(10, Math.round(d.latencyNs));
  return m;
}

/** A `writ.authz.v1.ReportRequest`: encoded decisions and the reporter's drop count. */
export function encodeReport(decisions: readonly Buffer[], dropped: number): Buffer {
  const w = new Writer(decisions.reduce((n, d) => n + d.length + 4, 16));
  for (const m of decisions) w.message(1, m);
  if (dropped > 0) w.enumValue(2, dropped);
  return w.finish();
}

/**
 * Walks the fields of the message in `buf[start..end]`: varints to `onInt`, length-delimited
 * fields to `onBytes` as a range of `buf` (nothing copied). Fixed-width fields are skipped. Varints
 * beyond 2^53 are refused: times, revisions and latencies never get there, and a hostile one must
 * not turn into a wrong number.
 */
function walk(
  buf: Buffer,
  start: number,
  end: number,
  onInt: (field: number, v: number) => void,
  onBytes: (field: number, from: number, to: number) => void,
): void {
  let p = start;
  const varint = (): number => {
    let n = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      if (p >= end) throw new ProtoError('truncated varint');
      const b = buf[p++]!;
      n += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(n)) throw new ProtoError('varint out of range');
        return n;
      }
      mul *= 128;
    }
    throw new ProtoError('varint too long');
  };
  while (p < end) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (field === 0) throw new ProtoError('field number 0');
    if (wire === 0) onInt(field, varint());
    else if (wire === 2) {
      const len = varint();
      if (p + len > end) throw new ProtoError('length past the end');
      onBytes(field, p, p + len);
      p += len;
    } else if (wire === 1 || wire === 5) {
      p += wire === 1 ? 8 : 4;
      if (p > end) throw new ProtoError('fixed field past the end');
    } else throw new ProtoError(`unsupported wire type ${wire}`);
  }
}

const STRING_FIELDS = [undefined, 'id', undefined, 'from', 'to', 'action', 'decision', 'reason', 'rule'] as const;

/**
 * Decodes one `Decision` (`buf[start..end]`). Unknown fields are skipped; a malformed message or
 * an over-long value throws ProtoError. Missing strings are '', missing numbers 0. `text`, the
 * whole of `buf` as a string when it is all ASCII, lets values be cut from it instead of decoded
 * one by one (a native call each).
 */
export function decodeDecision(buf: Buffer, start = 0, end = buf.length, text?: string): ReportedDecision {
  const d = { id: '', at: 0, from: '', to: '', action: '', decision: '', reason: '', rule: '', policyRevision: 0, latencyNs: 0 };
  walk(
    buf,
    start,
    end,
    (field, v) => {
      if (field === 2) d.at = v;
      else if (field === 9) d.policyRevision = v;
      else if (field === 10) d.latencyNs = v;
    },
    (field, from, to) => {
      const name = STRING_FIELDS[field];
      if (!name) return;
      if (to - from > DECISION_LIMITS[name]) throw new ProtoError(`${name} longer than ${DECISION_LIMITS[name]} bytes`);
      d[name] = text === undefined ? buf.toString('utf8', from, to) : text.slice(from, to);
    },
  );
  return d;
}

/**
 * Decodes a whole `ReportRequest`: its decisions, how many of them were malformed (skipped), and
 * the reporter's drop count. Throws ProtoError when the message itself is malformed.
 */
export function decodeReport(buf: Buffer): { decisions: ReportedDecision[]; malformed: number; dropped: number } {
  const text = isAscii(buf) ? buf.toString('latin1') : undefined;
  const decisions: ReportedDecision[] = [];
  let malformed = 0;
  let dropped = 0;
  walk(
    buf,
    0,
    buf.length,
    (field, v) => void (field === 2 && (dropped = v)),
    (field, from, to) => {
      if (field !== 1) return;
      try {
        decisions.push(decodeDecision(buf, from, to, text));
      } catch {
        malformed++;
      }
    },
  );
  return { decisions, malformed, dropped };
}

/** Where a decision's `to` and `decision` values are, and whether it carries an id and a time. */
export interface DecisionShape {
  readonly to: readonly [number, number];
  readonly decision: readonly [number, number];
  readonly complete: boolean;
}

/**
 * The shape of one encoded `Decision`, read without decoding its strings: what an agent checks
 * before passing the bytes on. Throws ProtoError where `decodeDecision` would.
 */
export function decisionShape(buf: Buffer): DecisionShape {
  let to: [number, number] = [0, 0];
  let decision: [number, number] = [0, 0];
  let id = false;
  let at = false;
  walk(
    buf,
    0,
    buf.length,
    (field, v) => void (field === 2 && (at = v > 0)),
    (field, from, end) => {
      const name = STRING_FIELDS[field];
      if (!name) return;
      if (end - from > DECISION_LIMITS[name]) throw new ProtoError(`${name} longer than ${DECISION_LIMITS[name]} bytes`);
      if (field === 1) id = end > from;
      else if (field === 4) to = [from, end];
      else if (field === 6) decision = [from, end];
    },
  );
  return { to, decision, complete: id && at };
}

/**
 * Splits a `ReportRequest` into its decisions and the drop count without decoding the decisions:
 * `visit` sees each one's bytes as a view into `buf`.
 */
export function readReport(buf: Buffer, visit: (decision: Buffer) => void): { dropped: number } {
  let dropped = 0;
  walk(
    buf,
    0,
    buf.length,
    (field, v) => void (field === 2 && (dropped = v)),
    (field, from, to) => void (field === 1 && visit(buf.subarray(from, to))),
  );
  return { dropped };
}

export class DecisionReporter {
  readonly #grpc: GrpcClient;
  /** Decisions already encoded (at record time: the cost is spread over requests, not paid in one go). */
  readonly #buffer: ReportBuffer;
  readonly #scratch = new Writer(512);
  readonly #timer: NodeJS.Timeout;
  #flushing = false;

  constructor(endpoint: string, opts: { maxBuffered?: number; flushMs?: number } = {}) {
    this.#grpc = new GrpcClient(endpoint);
    this.#buffer = new ReportBuffer(opts.maxBuffered ?? 20_000, MAX_MESSAGE);
    // Small, frequent batches: no pause in the caller's event loop, and 10,000 decisions a second get through.
    this.#timer = setInterval(() => void this.flush(), opts.flushMs ?? 200);
    this.#timer.unref();
  }

  record(d: ReportedDecision): void {
    if (this.#buffer.full) return this.#buffer.countDropped(1); // not worth encoding
    this.#buffer.push(writeDecision(this.#scratch.reset(), d).finish());
  }

  get stats(): { buffered: number; dropped: number } {
    return this.#buffer.stats;
  }

  /**
   * Sends what is buffered, in messages of up to 1 MiB. A message the agent refuses as malformed
   * or too large would be refused forever: its decisions are counted as dropped, except that an
   * agent of an earlier version, which takes 64 KiB at most, gets them again in smaller messages.
   */
  async flush(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      await this.#buffer.drain(
        (message) => this.#grpc.unary(REPORT, message, { 'workload.spiffe.io': 'true' }),
        (err, message) => {
          if (!(err instanceof GrpcError) || !PERMANENT.has(err.code)) return 'retry';
          if (err.code === GRPC_STATUS.RESOURCE_EXHAUSTED && message.length > MAX_MESSAGE_OLD_AGENT && this.#buffer.maxMessage > MAX_MESSAGE_OLD_AGENT) {
            this.#buffer.maxMessage = MAX_MESSAGE_OLD_AGENT;
            return 'retry';
          }
          return 'drop';
        },
      );
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
