/**
 * The one webhook deliverer the server has (vulnerability events, alerts): JSON bodies POSTed in
 * order, signed with HMAC-SHA256 over the exact body bytes (`X-Writ-Signature: sha256=<hex>`),
 * retried with exponential backoff and jitter, from a bounded queue whose drops are counted.
 */
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Logger } from 'pino';
import { WritError } from '@writ/spiffe';

export interface WebhookTarget {
  readonly url: string;
  /** The HMAC-SHA256 key, read from `secretFile` at start. */
  readonly secret: Buffer;
  /** A PEM CA to trust for an https URL (default: the system's). */
  readonly ca?: string;
}

function bad(field: string, msg: string): never {
  throw new WritError('ERR_CONFIG_INVALID', `${field}: ${msg}`, { field });
}

/** A webhook setting `{ url, secretFile, caFile? }` (server config, or an AlertRule's spec); `field` names it in errors. */
export function webhookTarget(w: unknown, field: string): WebhookTarget {
  if (typeof w !== 'object' || w === null || Array.isArray(w)) bad(field, 'must be a mapping { url, secretFile, caFile? }');
  const wh = w as Record<string, unknown>;
  for (const k of Object.keys(wh)) if (!['url', 'secretFile', 'caFile'].includes(k)) bad(`${field}.${k}`, 'unknown setting; known: url, secretFile, caFile');
  const url = wh['url'];
  if (typeof url !== 'string' || !/^https?:\/\//.test(url) || !URL.canParse(url)) bad(`${field}.url`, 'must be an http:// or https:// URL');
  const secretFile = wh['secretFile'];
  if (typeof secretFile !== 'string') bad(`${field}.secretFile`, 'is required: a file holding the HMAC key');
  let secret: Buffer;
  try {
    secret = Buffer.from(readFileSync(secretFile, 'utf8').trim());
  } catch (err) {
    return bad(`${field}.secretFile`, `cannot read ${secretFile}: ${(err as NodeJS.ErrnoException).code}`);
  }
  if (secret.length < 16) bad(`${field}.secretFile`, `${secretFile} must hold at least 16 bytes`);
  let ca: string | undefined;
  if (wh['caFile'] !== undefined) {
    try {
      ca = readFileSync(String(wh['caFile']), 'utf8');
    } catch (err) {
      bad(`${field}.caFile`, `cannot read ${String(wh['caFile'])}: ${(err as NodeJS.ErrnoException).code}`);
    }
  }
  return { url, secret, ...(ca ? { ca } : {}) };
}

/** The signature header value: `sha256=` and the hex HMAC-SHA256 of the exact body bytes. */
export function signBody(secret: Buffer, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** Default wait before retry `n` (1-based): 1 s doubling to 60 s, each drawn from its upper half ("equal jitter"), so receivers that failed together are not retried together. */
export function backoffWithJitter(n: number, random: () => number = Math.random): number {
  const cap = Math.min(1000 * 2 ** (n - 1), 60_000);
  return Math.round(cap / 2 + (cap / 2) * random());
}

export interface WebhookDelivererOptions {
  readonly target: WebhookTarget;
  /** The `X-Writ-Event` header: what kind of body this is (vulnerability, alert). */
  readonly event: string;
  readonly log: Logger;
  /** The wait before retry `n` (1-based); default backoffWithJitter. */
  readonly backoffMs?: (n: number) => number;
  /** Attempts per body (default 8). */
  readonly maxAttempts?: number;
  /** Bodies waiting at most (default 10,000); the oldest are dropped. */
  readonly maxQueue?: number;
  /** Told of every drop (a metric). */
  readonly onDrop?: (n: number) => void;
}

/** One webhook's queue. `send` never waits and never throws; delivery runs in the background, one body at a time. */
export class WebhookDeliverer {
  readonly #o: WebhookDelivererOptions;
  readonly #queue: Array<{ id: string; body: string }> = [];
  #delivering: Promise<void> | undefined;
  #closed = false;
  #wake: (() => void) | undefined;
  /** Bodies dropped because the queue was full (never delivered). */
  dropped = 0;
  /** Bodies given up on after their attempts, or refused by the receiver with a final 4xx. */
  failed = 0;
  delivered = 0;

  constructor(o: WebhookDelivererOptions) {
    this.#o = o;
  }

  get url(): string {
    return this.#o.target.url;
  }

  /** Queues one JSON body, identified by `id` (`X-Writ-Event-Id`, for the receiver's dedupe). */
  send(id: string, value: unknown): void {
    if (this.#closed) return;
    const max = this.#o.maxQueue ?? 10_000;
    this.#queue.push({ id, body: JSON.stringify(value) });
    if (this.#queue.length > max) {
      const n = this.#queue.length - max;
      this.#queue.splice(0, n);
      this.dropped += n;
      this.#o.onDrop?.(n);
      this.#o.log.warn({ event: this.#o.event, dropped: n }, 'webhook: the queue is full; the oldest were dropped');
    }
    this.#delivering ??= this.#drain().finally(() => (this.#delivering = undefined));
  }

  /** Resolves when every queued body was delivered or given up on. */
  async flushed(): Promise<void> {
    while (this.#delivering) await this.#delivering;
  }

  /** Stops delivering (a wait in progress ends at once); what is queued is dropped. */
  close(): void {
    this.#closed = true;
    this.#wake?.();
  }

  async #drain(): Promise<void> {
    const backoff = this.#o.backoffMs ?? backoffWithJitter;
    const attempts = this.#o.maxAttempts ?? 8;
    while (this.#queue.length && !this.#closed) {
      // Taken off the queue while in flight: the bound counts the waiting ones, and a drop never hits it.
      const { id, body } = this.#queue.shift()!;
      for (let n = 1; n <= attempts && !this.#closed; n++) {
        const status = await post(this.#o.target, this.#o.event, body, id).catch((err: Error) => err);
        if (typeof status === 'number' && status >= 200 && status < 300) {
          this.delivered++;
          break;
        }
        // A 4xx other than 408/429 will not get better by retrying.
        const final = typeof status === 'number' && status >= 400 && status < 500 && status !== 408 && status !== 429;
        if (final || n === attempts) {
          this.failed++;
          this.#o.log.warn({ event: this.#o.event, id, status: typeof status === 'number' ? status : status.message, attempts: n }, 'webhook: not delivered');
          break;
        }
        await new Promise<void>((r) => {
          const t = setTimeout(r, backoff(n));
          t.unref();
          this.#wake = () => (clearTimeout(t), r());
        });
        this.#wake = undefined;
      }
    }
  }
}

/** One signed POST; resolves with the status, rejects on a network error or after 10 s. */
function post(wh: WebhookTarget, event: string, body: string, id: string): Promise<number> {
  const url = new URL(wh.url);
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        timeout: 10_000,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'user-agent': 'writ-server',
          'x-writ-event': event,
          'x-writ-event-id': id,
          'x-writ-signature': signBody(wh.secret, body),
        },
        ...(wh.ca ? { ca: wh.ca } : {}),
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end(body);
  });
}
