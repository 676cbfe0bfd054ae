/**
 * Alerts (issue 15, section 3): the AlertRules of the policy set evaluated over the decision
 * batches agents report (`observeDecisions`, called where the store accepts them), the store's
 * change stream (quarantine, vulnerability inventory, policies) and a periodic check (keys near
 * expiry, stale federated bundles). An occurrence is stored with dedupe (same rule and key within
 * the rule's window: one alert, counted), logged at warn, POSTed to the rule's and the server's
 * webhooks, and may quarantine the offending identity (`respond`), which `undo` lifts again.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { WritError, parseDuration } from '@writ/spiffe';
import { parsePolicies, matchSegments, type Policy } from '@writ/policy';
import type { Metrics } from '../metrics.ts';
import { liftQuarantine, quarantineIdentity } from '../quarantine.ts';
import type { Alert, AlertState, DecisionRecord, Store, StoreChangeKind } from '../store/types.ts';
import { WebhookDeliverer, type WebhookTarget, webhookTarget } from '../webhook.ts';
import { newEwma, update, zScore, type Ewma } from './ewma.ts';
import { ALERT_RULE_KINDS, alertRulesOf, matchesPatterns, type AlertRule, type AlertRuleKind } from './rules.ts';

export interface AlertsConfig {
  /** Every alert is also POSTed here (server config `alerts.webhook`). */
  readonly webhook?: WebhookTarget;
  /** Automatic quarantines per rule per hour at most (default 10); the rest are skipped and counted. */
  readonly maxQuarantinesPerHour: number;
  /** Edges (and identities) whose state is kept at most (default 100,000); the least recently seen are evicted. */
  readonly maxEdges: number;
  /** How often keys and federated bundles are checked and the rules re-read (default 30 s). */
  readonly intervalMs: number;
}

export const ALERTS_DEFAULTS: AlertsConfig = { maxQuarantinesPerHour: 10, maxEdges: 100_000, intervalMs: 30_000 };

function bad(field: string, msg: string): never {
  throw new WritError('ERR_CONFIG_INVALID', `${field}: ${msg}`, { field });
}

/** The server config's `alerts` (YAML only): `{ webhook: { url, secretFile, caFile }, maxQuarantinesPerHour, maxEdges, interval }`. */
export function alertsConfig(v: unknown): AlertsConfig {
  if (v === undefined || v === null) return ALERTS_DEFAULTS;
  if (typeof v !== 'object' || Array.isArray(v)) bad('alerts', 'must be a mapping { webhook, maxQuarantinesPerHour, maxEdges, interval }');
  const o = v as Record<string, unknown>;
  const known = ['webhook', 'maxQuarantinesPerHour', 'maxEdges', 'interval'];
  for (const k of Object.keys(o)) if (!known.includes(k)) bad(`alerts.${k}`, `unknown setting; known: ${known.join(', ')}`);
  const int = (k: string, min: number, max: number, dflt: number): number => {
    const x = o[k];
    if (x === undefined) return dflt;
    if (typeof x !== 'number' || !Number.isInteger(x) || x < min || x > max) bad(`alerts.${k}`, `must be a whole number from ${min} to ${max}`);
    return x;
  };
  let intervalMs = ALERTS_DEFAULTS.intervalMs;
  if (o['interval'] !== undefined) {
    try {
      intervalMs = parseDuration(o['interval'] as string, 'alerts.interval', 3_600_000, 1000);
    } catch (err) {
      bad('alerts.interval', (err as Error).message.replace(/^alerts\.interval: /, ''));
    }
  }
  return {
    maxQuarantinesPerHour: int('maxQuarantinesPerHour', 0, 10_000, ALERTS_DEFAULTS.maxQuarantinesPerHour),
    maxEdges: int('maxEdges', 100, 10_000_000, ALERTS_DEFAULTS.maxEdges),
    intervalMs,
    ...(o['webhook'] !== undefined && o['webhook'] !== null ? { webhook: webhookTarget(o['webhook'], 'alerts.webhook') } : {}),
  };
}

/** An alert as the API, the CLI, the log and the webhooks show it. */
export function alertJson(a: Alert): Record<string, unknown> {
  return {
    id: a.id,
    rule: a.rule,
    kind: a.kind,
    key: a.key,
    state: a.state,
    count: a.count,
    firstAt: new Date(a.firstAt).toISOString(),
    lastAt: new Date(a.lastAt).toISOString(),
    ackedBy: a.ackedBy,
    ackedAt: a.ackedAt === null ? null : new Date(a.ackedAt).toISOString(),
    details: a.details,
    response: a.response && {
      quarantined: a.response.quarantined,
      expiresAt: a.response.expiresAt === null ? null : new Date(a.response.expiresAt).toISOString(),
      undoneAt: a.response.undoneAt === null ? null : new Date(a.response.undoneAt).toISOString(),
      undoneBy: a.response.undoneBy,
    },
  };
}

/** A bounded map in recency order: touching a key moves it to the end, the front is evicted first. */
class Recent<V> {
  readonly #m = new Map<string, V>();
  readonly #max: number;
  readonly #onEvict: () => void;
  constructor(max: number, onEvict: () => void) {
    this.#max = max;
    this.#onEvict = onEvict;
  }
  get(k: string): V | undefined {
    const v = this.#m.get(k);
    if (v !== undefined) {
      this.#m.delete(k);
      this.#m.set(k, v);
    }
    return v;
  }
  set(k: string, v: V): void {
    this.#m.delete(k);
    this.#m.set(k, v);
    while (this.#m.size > this.#max) {
      this.#m.delete(this.#m.keys().next().value!);
      this.#onEvict();
    }
  }
  get size(): number {
    return this.#m.size;
  }
  values(): IterableIterator<V> {
    return this.#m.values();
  }
}

interface SpikeState {
  bucketStart: number;
  total: number;
  denies: number;
  readonly ewma: Ewma;
}

/** What is kept per (caller, destination): that it is known, and each deny-spike rule's statistic. */
interface EdgeState {
  readonly from: string;
  readonly to: string;
  readonly spikes: Map<string, SpikeState>;
}

export interface AlertServiceOptions {
  readonly store: Store;
  readonly clock: () => number;
  readonly log: Logger;
  readonly config: AlertsConfig;
  readonly trustDomain: string;
  /** Never quarantined by a response (besides Writ's own agents and server). */
  readonly breakGlass?: readonly string[];
  readonly metrics?: Metrics;
  /** Webhook retries: the wait before retry `n`; default backoff with jitter. */
  readonly backoffMs?: (n: number) => number;
}

const WATCHED: ReadonlySet<StoreChangeKind> = new Set(['policies', 'quarantine', 'reports', 'workloads']);
const HOUR = 3_600_000;

export class AlertService {
  readonly #o: AlertServiceOptions;
  #rules: AlertRule[] = [];
  #enforced: Policy[] = [];
  #revision = -1;
  #reloading: Promise<void> = Promise.resolve();
  readonly #edges: Recent<EdgeState>;
  readonly #identities: Recent<true>;
  /** Quarantined identities last seen, to tell the added ones (undefined until first read). */
  #quarantined: Set<string> | undefined;
  /** Identity -> the critical vulnerabilities of the images it runs now (only with a critical-cve-call rule). */
  #critical = new Map<string, { digest: string; vulnerabilities: string[] }>();
  readonly #responses = new Map<string, number[]>();
  readonly #webhooks = new Map<string, WebhookDeliverer>();
  #timers: NodeJS.Timeout[] = [];
  #debounce: NodeJS.Timeout | undefined;
  #unsubscribe: (() => void) | undefined;
  #pending = new Set<Promise<unknown>>();
  #closed = false;
  /** Edge states evicted to keep the state bounded. */
  evictions = 0;

  constructor(o: AlertServiceOptions) {
    this.#o = o;
    const evicted = (): void => {
      this.evictions++;
      o.metrics?.alertEdgeEvictions.inc();
    };
    this.#edges = new Recent(o.config.maxEdges, evicted);
    this.#identities = new Recent(o.config.maxEdges, evicted);
    if (o.config.webhook) this.#webhooks.set('', this.#deliverer(o.config.webhook));
  }

  /** Reads the rules, subscribes to the store and starts the timers. */
  async start(): Promise<void> {
    await this.reload();
    this.#quarantined = new Set((await this.#o.store.listQuarantine(this.#o.clock())).map((q) => q.spiffeId));
    await this.#refreshCritical();
    this.#unsubscribe = this.#o.store.onChange((c) => {
      if (!WATCHED.has(c.kind)) return;
      if (c.kind === 'policies') this.#track(this.reload());
      else if (c.kind === 'quarantine') this.#track(this.#quarantineChanged());
      else if (!this.#debounce)
        this.#debounce = setTimeout(() => {
          this.#debounce = undefined;
          this.#track(this.#refreshCritical());
        }, 500).unref();
    });
    // Deny-rate buckets close on time, not only when the edge's next decision arrives.
    this.#timers.push(setInterval(() => this.#track(this.closeBuckets()), 1000).unref());
    this.#timers.push(setInterval(() => this.#track(this.tick()), this.#o.config.intervalMs).unref());
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#unsubscribe?.();
    for (const t of this.#timers) clearInterval(t);
    if (this.#debounce) clearTimeout(this.#debounce);
    await this.settled();
    for (const w of this.#webhooks.values()) w.close();
  }

  /** Resolves once the evaluations started so far are done (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.#pending.size) await Promise.allSettled([...this.#pending]);
  }

  /** Resolves once every webhook delivery queued so far is done. */
  async flushed(): Promise<void> {
    await this.settled();
    await Promise.all([...this.#webhooks.values()].map((w) => w.flushed()));
  }

  get rules(): readonly AlertRule[] {
    return this.#rules;
  }

  #track(p: Promise<unknown>): void {
    const q = p.catch((err: Error) => this.#o.log.warn({ err: err.message }, 'alerts: evaluation failed'));
    this.#pending.add(q);
    void q.finally(() => this.#pending.delete(q));
  }

  /** Re-reads the AlertRules (and the enforce-mode destinations) when the policy revision changed; one at a time, in call order. */
  reload(): Promise<void> {
    const p = this.#reloading.then(() => this.#reload());
    this.#reloading = p.catch(() => undefined);
    return p;
  }

  async #reload(): Promise<void> {
    const rev = await this.#o.store.getPolicyRevision();
    if ((rev?.revision ?? 0) === this.#revision) return;
    this.#revision = rev?.revision ?? 0;
    const policies = rev?.policies ?? {};
    try {
      this.#rules = alertRulesOf(policies);
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message }, 'alerts: the stored AlertRules cannot be read; keeping the previous ones');
    }
    this.#enforced = Object.entries(policies)
      .filter(([k]) => !k.includes('/'))
      .flatMap(([, y]) => {
        try {
          return parsePolicies(y, { allowExpired: true }).policies;
        } catch {
          return [];
        }
      })
      .filter((p) => p.mode === 'enforce' && p.until === undefined);
    if (this.#rules.some((r) => r.kind === 'critical-cve-call') && this.#quarantined) await this.#refreshCritical();
  }

  #of(kind: AlertRuleKind): AlertRule[] {
    return this.#rules.filter((r) => r.kind === kind);
  }

  #isEnforced(to: string): boolean {
    const segs = to.slice(9).split('/');
    return this.#enforced.some((p) => matchSegments(p.to.segments, segs));
  }

  /**
   * Evaluates one batch of decisions as the store accepts it (call it before storing them: an edge
   * is new when no stored decision has it yet). Never throws: alerts must not cost a batch.
   */
  async observeDecisions(records: readonly DecisionRecord[]): Promise<void> {
    if (this.#closed || this.#rules.length === 0 || records.length === 0) return;
    try {
      await this.#observe(records);
    } catch (err) {
      this.#o.log.warn({ err: (err as Error).message }, 'alerts: a decision batch could not be evaluated');
    }
  }

  async #observe(records: readonly DecisionRecord[]): Promise<void> {
    const now = this.#o.clock();
    const newEdgeRules = this.#of('new-edge');
    const newIdRules = this.#of('new-identity');
    const spikeRules = this.#of('deny-spike');
    const cveRules = this.#of('critical-cve-call');
    const firsts = new Map<string, DecisionRecord>();
    for (const r of records) if (r.from) firsts.has(`${r.from}\n${r.to}`) || firsts.set(`${r.from}\n${r.to}`, r);

    // Edges not in the bounded state are looked up in the store once; the rest are known.
    const unknown = [...firsts.entries()].filter(([k]) => this.#edges.get(k) === undefined);
    const seen = newEdgeRules.length && unknown.length ? await this.#o.store.seenEdges(unknown.map(([, r]) => ({ from: r.from, to: r.to }))) : undefined;
    for (const [k, r] of unknown) {
      this.#edges.set(k, { from: r.from, to: r.to, spikes: new Map() });
      if (!seen || seen.has(k) || !this.#isEnforced(r.to)) continue;
      for (const rule of newEdgeRules)
        if (matchesPatterns(rule.from, r.from) && matchesPatterns(rule.to, r.to))
          await this.#fire(rule, `${r.from} -> ${r.to}`, { from: r.from, to: r.to, action: r.action, decision: r.decision, reason: r.reason }, r.from);
    }

    if (newIdRules.length) {
      const ids = new Map<string, { role: 'caller' | 'callee'; peer: string }>();
      for (const r of firsts.values()) {
        if (!ids.has(r.from)) ids.set(r.from, { role: 'caller', peer: r.to });
        if (!ids.has(r.to)) ids.set(r.to, { role: 'callee', peer: r.from });
      }
      const fresh = [...ids.keys()].filter((id) => this.#identities.get(id) === undefined);
      const known = fresh.length ? await this.#o.store.seenIdentities(fresh) : new Set<string>();
      for (const id of fresh) {
        this.#identities.set(id, true);
        if (known.has(id)) continue;
        const x = ids.get(id)!;
        for (const rule of newIdRules) await this.#fire(rule, id, { spiffeId: id, role: x.role, peer: x.peer }, id);
      }
    }

    if (spikeRules.length)
      for (const r of records) {
        // A quarantine's denies are the response, not the symptom; an unauthenticated caller has no edge.
        if (!r.from || r.reason === 'QUARANTINED') continue;
        const edge = this.#edges.get(`${r.from}\n${r.to}`);
        if (!edge) continue;
        for (const rule of spikeRules) {
          if (!matchesPatterns(rule.from, r.from) || !matchesPatterns(rule.to, r.to)) continue;
          let s = edge.spikes.get(rule.name);
          if (!s) edge.spikes.set(rule.name, (s = { bucketStart: now, total: 0, denies: 0, ewma: newEwma() }));
          if (now >= s.bucketStart + rule.denySpike.intervalMs) await this.#closeBucket(rule, edge, s, now);
          s.total++;
          if (r.decision === 'deny') s.denies++;
        }
      }

    if (cveRules.length)
      for (const r of firsts.values()) {
        const c = this.#critical.get(r.to);
        if (!c) continue;
        for (const rule of cveRules)
          if (matchesPatterns(rule.from, r.from) && matchesPatterns(rule.to, r.to))
            await this.#fire(rule, `${r.from} -> ${r.to}`, { from: r.from, to: r.to, imageDigest: c.digest, vulnerabilities: c.vulnerabilities }, r.to);
      }
  }

  /** Scores a finished bucket against the edge's history, then folds it in. */
  async #closeBucket(rule: AlertRule, edge: EdgeState, s: SpikeState, now: number): Promise<void> {
    const p = rule.denySpike;
    if (s.total >= p.minRequests) {
      const rate = s.denies / s.total;
      const z = zScore(s.ewma, rate, p.minStdDev);
      if (z >= p.z)
        await this.#fire(
          rule,
          `${edge.from} -> ${edge.to}`,
          {
            from: edge.from,
            to: edge.to,
            requests: s.total,
            denies: s.denies,
            denyRate: Math.round(rate * 10_000) / 10_000,
            expectedRate: Math.round(s.ewma.mean * 10_000) / 10_000,
            z: Math.round(z * 100) / 100,
          },
          edge.from,
        );
      update(s.ewma, rate, p.alpha);
    }
    // Buckets with too few requests say nothing about the rate: they are left out of the history.
    s.bucketStart = now;
    s.total = 0;
    s.denies = 0;
  }

  /** Closes the deny-rate buckets whose time is up (the 1 s timer; tests call it with their clock). */
  async closeBuckets(): Promise<void> {
    const spikeRules = this.#of('deny-spike');
    if (!spikeRules.length) return;
    const now = this.#o.clock();
    for (const edge of [...this.#edges.values()])
      for (const rule of spikeRules) {
        const s = edge.spikes.get(rule.name);
        if (s && s.total > 0 && now >= s.bucketStart + rule.denySpike.intervalMs) await this.#closeBucket(rule, edge, s, now);
      }
  }

  /** The periodic check: keys near expiry, stale federated bundles, the rules of other replicas' writes. */
  async tick(): Promise<void> {
    if (this.#closed) return;
    await this.reload();
    const now = this.#o.clock();
    const keyRules = this.#of('key-expiry');
    if (keyRules.length)
      for (const a of await this.#o.store.listAuthorities()) {
        if (a.status === 'old') continue;
        for (const rule of keyRules)
          if (a.notAfter - now <= rule.withinMs)
            await this.#fire(rule, a.id, {
              authority: a.id,
              type: a.kind,
              status: a.status,
              notAfter: new Date(a.notAfter).toISOString(),
              expiresInSeconds: Math.max(0, Math.round((a.notAfter - now) / 1000)),
            });
      }
    const fedRules = this.#of('federation-stale');
    if (fedRules.length)
      for (const f of await this.#o.store.listFederations()) {
        const last = f.lastSuccessAt ?? f.createdAt;
        for (const rule of fedRules)
          if (now - last > rule.olderThanMs)
            await this.#fire(rule, f.trustDomain, {
              trustDomain: f.trustDomain,
              lastSuccessAt: f.lastSuccessAt === null ? null : new Date(f.lastSuccessAt).toISOString(),
              lastError: f.lastError,
              ageSeconds: Math.round((now - last) / 1000),
            });
      }
    await this.#refreshCritical();
  }

  async #quarantineChanged(): Promise<void> {
    const now = this.#o.clock();
    const list = await this.#o.store.listQuarantine(now);
    const before = this.#quarantined ?? new Set<string>();
    this.#quarantined = new Set(list.map((q) => q.spiffeId));
    for (const q of list) {
      if (before.has(q.spiffeId)) continue;
      for (const rule of this.#of('quarantine'))
        await this.#fire(rule, q.spiffeId, {
          spiffeId: q.spiffeId,
          reason: q.reason,
          createdBy: q.createdBy,
          expiresAt: q.expiresAt === null ? null : new Date(q.expiresAt).toISOString(),
        });
    }
  }

  async #refreshCritical(): Promise<void> {
    if (!this.#of('critical-cve-call').length) {
      this.#critical = new Map();
      return;
    }
    const now = this.#o.clock();
    const rows = await this.#o.store.listVulnerabilities({ severity: ['critical'], running: true, now });
    const byDigest = new Map<string, Set<string>>();
    for (const r of rows) byDigest.set(r.imageDigest, (byDigest.get(r.imageDigest) ?? new Set()).add(r.vulnId));
    const out = new Map<string, { digest: string; vulnerabilities: string[] }>();
    if (byDigest.size)
      for (const w of await this.#o.store.runningWorkloads([...byDigest.keys()], now))
        for (const id of w.spiffeIds)
          out.set(id, { digest: w.manifestDigest, vulnerabilities: [...(byDigest.get(w.manifestDigest) ?? [])].sort().slice(0, 50) });
    this.#critical = out;
  }

  /**
   * Raises an alert of `kind` from outside the rules' own inputs (the audit log's verification
   * calls `raise('audit-verification-failed', { index, reason })`): one per rule of that kind, or,
   * when the policy set has none, under a rule named after the kind, so it is never silent.
   */
  async raise(kind: AlertRuleKind, details: Readonly<Record<string, unknown>>, key: string = kind): Promise<Alert[]> {
    if (!(ALERT_RULE_KINDS as readonly string[]).includes(kind)) throw new TypeError(`unknown alert kind ${kind}`);
    const rules = this.#of(kind);
    const fallback = { name: kind, kind, windowMs: HOUR } as AlertRule;
    const out: Alert[] = [];
    for (const rule of rules.length ? rules : [fallback]) {
      const a = await this.#fire(rule, key, details);
      if (a) out.push(a);
    }
    return out;
  }

  async #fire(rule: AlertRule, key: string, details: Readonly<Record<string, unknown>>, offending?: string): Promise<Alert | undefined> {
    const { store, clock, log } = this.#o;
    const { alert, created } = await store.raiseAlert({ id: randomUUID(), rule: rule.name, kind: rule.kind, key, at: clock(), details }, rule.windowMs);
    this.#o.metrics?.alerts.inc({ kind: rule.kind });
    if (!created) return alert;
    let out = alert;
    if (rule.respond && offending) out = (await this.#respond(rule, alert, offending)) ?? alert;
    log.warn({ alert: alertJson(out) }, 'alert');
    this.#webhooks.get('')?.send(out.id, alertJson(out));
    if (rule.webhook) this.#ruleWebhook(rule)?.send(out.id, alertJson(out));
    return out;
  }

  #deliverer(target: WebhookTarget): WebhookDeliverer {
    return new WebhookDeliverer({
      target,
      event: 'alert',
      log: this.#o.log,
      ...(this.#o.backoffMs ? { backoffMs: this.#o.backoffMs } : {}),
      onDrop: (n) => this.#o.metrics?.webhookDropped.inc({ event: 'alert' }, n),
    });
  }

  /** A rule's own webhook, its files read on first use (a file that cannot be read is logged, the alert stays stored). */
  #ruleWebhook(rule: AlertRule): WebhookDeliverer | undefined {
    const w = rule.webhook!;
    const k = `${w.url}\n${w.secretFile}\n${w.caFile ?? ''}`;
    let d = this.#webhooks.get(k);
    if (!d) {
      try {
        d = this.#deliverer(webhookTarget(w, `AlertRule ${rule.name}: spec.webhook`));
      } catch (err) {
        this.#o.log.warn({ rule: rule.name, err: (err as Error).message }, 'alerts: the rule webhook cannot be used');
        return undefined;
      }
      this.#webhooks.set(k, d);
    }
    return d;
  }

  /** Whether a response may never quarantine this identity: Writ's own agents and servers, and break-glass identities. */
  #protected(id: string): boolean {
    return id.startsWith(`spiffe://${this.#o.trustDomain}/writ/`) || (this.#o.breakGlass ?? []).includes(id);
  }

  async #respond(rule: AlertRule, alert: Alert, id: string): Promise<Alert | undefined> {
    const { store, clock, log, config, metrics } = this.#o;
    const now = clock();
    const result = (r: string): void => metrics?.alertResponses.inc({ result: r });
    if (this.#protected(id)) {
      result('protected');
      log.warn({ rule: rule.name, spiffeId: id }, 'alerts: a response would quarantine a protected identity; not done');
      return undefined;
    }
    const recent = (this.#responses.get(rule.name) ?? []).filter((t) => t > now - HOUR);
    if (recent.length >= config.maxQuarantinesPerHour) {
      this.#responses.set(rule.name, recent);
      result('limited');
      log.warn(
        { rule: rule.name, spiffeId: id, limit: config.maxQuarantinesPerHour },
        'alerts: the hourly limit of automatic quarantines is reached; not done',
      );
      return undefined;
    }
    try {
      // The audit log names the rule as the author, not the agent whose decision batch set it off.
      const by = `alert-rule:${rule.name}`;
      const q = await store.withActor(by, () =>
        quarantineIdentity(store, {
          spiffeId: id,
          reason: `alert ${alert.id} (${rule.kind})`.slice(0, 500),
          createdBy: by,
          ttlMs: rule.respond!.quarantineTtlMs,
          now,
          keepLive: true,
        }),
      );
      if (!q) {
        result('already');
        return undefined;
      }
      recent.push(now);
      this.#responses.set(rule.name, recent);
      result('quarantined');
      return await store.setAlertResponse(alert.id, { quarantined: id, expiresAt: q.expiresAt, undoneAt: null, undoneBy: null });
    } catch (err) {
      result('failed');
      log.warn({ rule: rule.name, spiffeId: id, err: (err as Error).message }, 'alerts: the automatic quarantine failed');
      return undefined;
    }
  }

  list(q: { rule?: string; state?: AlertState; limit: number }): Promise<Alert[]> {
    return this.#o.store.listAlerts(q);
  }

  async ack(id: string, by: string): Promise<Alert> {
    const a = await this.#o.store.ackAlert(id, by, this.#o.clock());
    if (!a) throw new WritError('ERR_NOT_FOUND', `no alert ${id.slice(0, 100)}`);
    return a;
  }

  /** Lifts the quarantine an alert's response wrote (if it is still the one in force) and records that. */
  async undo(id: string, by: string): Promise<{ alert: Alert; lifted: boolean }> {
    const { store, clock } = this.#o;
    const a = await store.getAlert(id);
    if (!a) throw new WritError('ERR_NOT_FOUND', `no alert ${id.slice(0, 100)}`);
    if (!a.response) throw new WritError('ERR_ALERT_NO_RESPONSE', `alert ${id} did nothing to undo (its rule has no respond, or the response was not done)`);
    if (a.response.undoneAt !== null) return { alert: a, lifted: false };
    const now = clock();
    // Only the rule's own entry: an operator's quarantine written since stays.
    const lifted = await liftQuarantine(store, a.response.quarantined, { now, onlyIf: (q) => q.createdBy === `alert-rule:${a.rule}` });
    const next = await store.setAlertResponse(id, { ...a.response, undoneAt: now, undoneBy: by });
    this.#o.log.info({ alert: id, spiffeId: a.response.quarantined, lifted, by }, 'alerts: response undone');
    return { alert: next ?? a, lifted };
  }
}
