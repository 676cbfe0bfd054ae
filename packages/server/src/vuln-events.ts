/**
 * Vulnerability events: when a new report, a newly running workload or an exception that ends
 * makes a running workload affected by a vulnerability at or above the configured severity, one
 * event per (vulnerability, image digest, SPIFFE ID) while it stays affected. Evaluated on the
 * store changes `reports`, `workloads`, `policies` (exceptions), `vex` and `images`, and on a timer
 * for what is no write: an exception expiring, a workload whose agent fell silent. The timer skips
 * the evaluation (a read of the whole running set) when neither happened and nothing was written
 * since the last one. Events are stored (`GET /v1/vulnerabilities/events`, `writ vuln
 * events`) and, when configured, POSTed to a webhook signed with HMAC-SHA256 (`X-Writ-Signature`).
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { WritError, parseDuration } from '@writ/spiffe';
import { SEVERITIES, type Severity } from '@writ/vuln';
import type { SuppressionSet } from '@writ/vuln';
import { loadSuppressions } from './suppressions.ts';
import type { RunningWorkload, Store, StoreChangeKind, VulnEvent, VulnEventCause } from './store/types.ts';
import { atLeast, severityRank } from './vuln-exposure.ts';
import { WebhookDeliverer, type WebhookTarget, webhookTarget } from './webhook.ts';

export interface VulnEventsConfig {
  /** Events for vulnerabilities at or above this severity (default high). */
  readonly minSeverity: Severity;
  /** How often the timer looks for an exception expired or a workload gone silent (then evaluates). Default 30 s. */
  readonly intervalMs: number;
  readonly webhook?: WebhookTarget;
}

export const VULN_EVENTS_DEFAULTS: VulnEventsConfig = { minSeverity: 'high', intervalMs: 30_000 };

function bad(field: string, msg: string): never {
  throw new WritError('ERR_CONFIG_INVALID', `${field}: ${msg}`, { field });
}

/** The server config's `vulnEvents` (YAML only): `{ minSeverity, interval, webhook: { url, secretFile, caFile } }`. */
export function vulnEventsConfig(v: unknown): VulnEventsConfig {
  if (v === undefined || v === null) return VULN_EVENTS_DEFAULTS;
  if (typeof v !== 'object' || Array.isArray(v)) bad('vulnEvents', 'must be a mapping { minSeverity, interval, webhook: { url, secretFile, caFile } }');
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!['minSeverity', 'interval', 'webhook'].includes(k)) bad(`vulnEvents.${k}`, 'unknown setting; known: minSeverity, interval, webhook');
  const minSeverity = (o['minSeverity'] ?? 'high') as Severity;
  if (!(SEVERITIES as readonly unknown[]).includes(minSeverity)) bad('vulnEvents.minSeverity', `must be one of ${SEVERITIES.join(', ')}`);
  let intervalMs = VULN_EVENTS_DEFAULTS.intervalMs;
  if (o['interval'] !== undefined) {
    try {
      intervalMs = parseDuration(o['interval'] as string, 'vulnEvents.interval', 3_600_000, 1000);
    } catch (err) {
      bad('vulnEvents.interval', (err as Error).message.replace(/^vulnEvents\.interval: /, ''));
    }
  }
  const w = o['webhook'];
  if (w === undefined || w === null) return { minSeverity, intervalMs };
  return { minSeverity, intervalMs, webhook: webhookTarget(w, 'vulnEvents.webhook') };
}

/** An event as the API, the CLI and the webhook show it. */
export function vulnEventJson(e: VulnEvent): Record<string, unknown> {
  return {
    id: e.id,
    at: new Date(e.at).toISOString(),
    cause: e.cause,
    vulnerability: e.vulnerability,
    severity: e.severity,
    imageDigest: e.imageDigest,
    spiffeId: e.spiffeId,
    owner: e.owner,
    node: e.node,
    namespace: e.namespace,
    pod: e.pod,
  };
}

/**
 * An evaluation walks every running workload and every finding of a running image (100,000 and
 * more); it hands the event loop back this often, so that the server's answers are not held up behind it.
 */
const YIELD_EVERY = 2000;
const breathe = (): Promise<void> => new Promise((r) => setImmediate(r));

/** The store changes that can change what an evaluation finds (`policies`: exceptions; `images`: names, index digests). */
const WATCHED: ReadonlySet<StoreChangeKind> = new Set(['reports', 'workloads', 'policies', 'vex', 'images']);

export interface VulnEventsOptions {
  readonly store: Store;
  readonly clock: () => number;
  readonly log: Logger;
  readonly config: VulnEventsConfig;
  /** The suppressions in force (default: the server's loadSuppressions). */
  readonly suppressions?: (store: Store, now: number) => Promise<SuppressionSet>;
  /** Webhook delivery: the wait before retry `n` (1-based); default backoffWithJitter (1 s doubling to 60 s). */
  readonly backoffMs?: (n: number) => number;
  /** Delivery attempts per event (default 8) and events waiting at most (default 10,000; the oldest are dropped). */
  readonly maxAttempts?: number;
  readonly maxQueue?: number;
  /** Told of every event dropped from the full webhook queue (the server's metric). */
  readonly onDrop?: (n: number) => void;
  /** Whether this replica runs the evaluations (the holder of their lease; default: always). */
  readonly runsHere?: () => boolean;
  /**
   * Whether every write of other replicas reaches `store.onChange` now (PostgreSQL: the notification
   * connection is up; default: always, as on SQLite). While not, the timer evaluates every time.
   */
  readonly othersHeard?: () => boolean;
}

/**
 * Watches the store and records vulnerability events. `evaluate()` is also callable directly
 * (tests, and once at start).
 */
export class VulnEventWatcher {
  readonly #o: VulnEventsOptions;
  #lastAt: number;
  /** (vulnerability, digest) pairs found suppressed by the last evaluation: affected later, an exception ended. */
  #suppressed = new Set<string>();
  #running: Promise<VulnEvent[]> | undefined;
  #again = false;
  #timer: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  /** How long the last evaluation took (ms). */
  #lastMs = 0;
  #unsubscribe: (() => void) | undefined;
  readonly #webhook: WebhookDeliverer | undefined;
  #closed = false;
  /** A write the last evaluation may not have seen (or none yet, or it failed): the timer must not skip. */
  #dirty = true;
  /** The `now` of the last evaluation, and when an exception in force then ends. */
  #evaluatedAt: number | undefined;
  #nextExpiry: number | undefined;
  /** Evaluations run (tests: an idle period runs none). */
  #evaluations = 0;

  constructor(o: VulnEventsOptions) {
    this.#o = o;
    this.#webhook = o.config.webhook
      ? new WebhookDeliverer({
          target: o.config.webhook,
          event: 'vulnerability',
          log: o.log,
          ...(o.backoffMs ? { backoffMs: o.backoffMs } : {}),
          ...(o.maxAttempts !== undefined ? { maxAttempts: o.maxAttempts } : {}),
          ...(o.maxQueue !== undefined ? { maxQueue: o.maxQueue } : {}),
          ...(o.onDrop ? { onDrop: o.onDrop } : {}),
        })
      : undefined;
    // Workloads that started before this server did are not "new" to it: a report or an expiry made them affected.
    this.#lastAt = o.clock();
  }

  start(): void {
    this.#unsubscribe = this.#o.store.onChange((c) => {
      if (!WATCHED.has(c.kind)) return;
      this.#dirty = true;
      // Coalesce a burst of writes (an agent's report, a batch of reports) into one evaluation.
      // Agents' heartbeats are writes too: with a large running set, evaluations are spaced by
      // twice the last one's duration, so they never take more than about a third of the time.
      const wait = Math.max(200, 2 * this.#lastMs);
      if (!this.#debounce) this.#debounce = setTimeout(() => ((this.#debounce = undefined), void this.#run()), wait).unref();
    });
    this.#timer = setInterval(() => void this.tick(), this.#o.config.intervalMs).unref();
    void this.#run();
  }

  /**
   * What the timer does: evaluate again if anything may have changed since the last evaluation — a
   * write, an exception's expiry, a workload silent past the grace period (no write tells of the last two).
   */
  async tick(): Promise<void> {
    // One running: a write meanwhile queues the next itself; an expiry or a silence is seen at the next tick.
    // (A tick queueing a second evaluation behind the first one at start read the whole running set twice.)
    if (this.#running) return;
    let due = true;
    try {
      due = await this.#due();
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message }, 'vulnerability events: could not tell whether to evaluate; evaluating');
    }
    if (due) await this.#run();
  }

  /** Something may have been written that `store.onChange` did not tell (server.ts: the notification connection came back). */
  changed(): void {
    this.#dirty = true;
  }

  /** How many evaluations ran. */
  get evaluations(): number {
    return this.#evaluations;
  }

  async #due(): Promise<boolean> {
    if (this.#dirty || this.#evaluatedAt === undefined || this.#o.othersHeard?.() === false) return true;
    const now = this.#o.clock();
    if (this.#nextExpiry !== undefined && now >= this.#nextExpiry) return true;
    return this.#o.store.workloadsWentSilent(this.#evaluatedAt, now);
  }

  /** Resolves once no evaluation is due or running (tests, shutdown). */
  async settled(): Promise<void> {
    for (;;) {
      if (this.#debounce) await new Promise((r) => setTimeout(r, 50));
      else if (this.#running || this.#again) await Promise.resolve<unknown>(this.#running ?? new Promise((r) => setTimeout(r, 10))).catch(() => undefined);
      else return;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#unsubscribe?.();
    if (this.#timer) clearInterval(this.#timer);
    if (this.#debounce) clearTimeout(this.#debounce);
    await this.#running?.catch(() => undefined);
    this.#webhook?.close();
  }

  /** Events dropped because the webhook queue was full (and never delivered). */
  get dropped(): number {
    return this.#webhook?.dropped ?? 0;
  }

  async #run(): Promise<void> {
    if (this.#closed) return;
    // Another replica evaluates meanwhile; once this one holds the lease again, it starts afresh.
    if (this.#o.runsHere?.() === false) return void (this.#dirty = true);
    if (this.#running) {
      this.#again = true;
      return;
    }
    try {
      await this.evaluate();
    } catch (err) {
      this.#dirty = true;
      this.#o.log.warn({ err: (err as Error).message }, 'vulnerability events: evaluation failed; will retry');
    }
    if (this.#again) {
      this.#again = false;
      void this.#run();
    }
  }

  /** Evaluates the running set now; returns the events it recorded. */
  evaluate(): Promise<VulnEvent[]> {
    const p = this.#evaluate().finally(() => (this.#running = undefined));
    this.#running = p;
    return p;
  }

  async #evaluate(): Promise<VulnEvent[]> {
    const started = performance.now();
    try {
      return await this.#evaluateAt();
    } finally {
      this.#lastMs = performance.now() - started;
    }
  }

  async #evaluateAt(): Promise<VulnEvent[]> {
    const { store, clock, config } = this.#o;
    const now = clock();
    const since = this.#lastAt;
    // Writes from here on are the next evaluation's (this one may read before or after them).
    this.#dirty = false;
    this.#evaluations++;
    const severities = SEVERITIES.filter((s) => atLeast(s, config.minSeverity));
    const [rows, suppressions] = await Promise.all([
      store.listVulnerabilities({ severity: severities, running: true, now }),
      (this.#o.suppressions ?? loadSuppressions)(store, now),
    ]);
    // (vulnerability, digest) -> worst unsuppressed severity.
    const affected = new Map<string, Map<string, Severity>>();
    const suppressedNow = new Set<string>();
    let n = 0;
    for (const r of rows) {
      if (++n % YIELD_EVERY === 0) await breathe();
      const s = suppressions.match(
        {
          vulnId: r.vulnId,
          aliases: r.aliases,
          imageDigest: r.imageDigest,
          repositories: r.names,
          packageName: r.packageName ?? '',
          ...(r.purl ? { purl: r.purl } : {}),
        },
        now,
      );
      if (s) {
        suppressedNow.add(`${r.vulnId}\n${r.imageDigest}`);
        continue;
      }
      const byVuln = affected.get(r.imageDigest) ?? new Map<string, Severity>();
      const had = byVuln.get(r.vulnId);
      if (had === undefined || severityRank(r.severity) < severityRank(had)) byVuln.set(r.vulnId, r.severity);
      affected.set(r.imageDigest, byVuln);
    }
    const workloads = affected.size ? await store.runningWorkloads([...affected.keys()], now) : [];
    // One candidate per (vulnerability, digest, identity), from the newest workload of that identity on that digest.
    const current = new Map<string, { e: Omit<VulnEvent, 'seq'>; newest: RunningWorkload }>();
    for (const w of workloads) {
      if (++n % YIELD_EVERY === 0) await breathe();
      for (const [vulnId, severity] of affected.get(w.manifestDigest) ?? [])
        for (const spiffeId of w.spiffeIds) {
          const k = `${vulnId}\n${w.manifestDigest}\n${spiffeId}`;
          const had = current.get(k);
          if (had && had.newest.firstSeen >= w.firstSeen) continue;
          current.set(k, {
            newest: w,
            e: {
              id: randomUUID(),
              at: now,
              cause: 'report',
              vulnerability: vulnId,
              severity,
              imageDigest: w.manifestDigest,
              spiffeId,
              owner: w.owner,
              node: w.node,
              namespace: w.namespace,
              pod: w.podName,
            },
          });
        }
    }
    // A new workload; else a finding that was suppressed last time (its exception ended); else a new report.
    const causeOf = (e: Omit<VulnEvent, 'seq'>, w: RunningWorkload): VulnEventCause =>
      w.firstSeen > since ? 'workload' : this.#suppressed.has(`${e.vulnerability}\n${e.imageDigest}`) ? 'exception-expired' : 'report';
    const events = await store.syncVulnExposures([...current.values()].map(({ e, newest }) => ({ ...e, cause: causeOf(e, newest) })));
    this.#lastAt = now;
    this.#evaluatedAt = now;
    this.#nextExpiry = suppressions.nextExpiry(now);
    this.#suppressed = suppressedNow;
    for (const e of events) {
      if (++n % YIELD_EVERY === 0) await breathe();
      this.#o.log.info({ event: vulnEventJson(e) }, 'vulnerability event');
    }
    // At debug only: with --log-level debug, a test (or an operator) sees that evaluations happen.
    this.#o.log.debug({ events: events.length, running: workloads.length }, 'vulnerability events evaluated');
    for (const e of events) this.#webhook?.send(e.id, vulnEventJson(e));
    return events;
  }

  /** Resolves when every queued event was delivered or given up on. */
  async flushed(): Promise<void> {
    await this.#webhook?.flushed();
  }
}
