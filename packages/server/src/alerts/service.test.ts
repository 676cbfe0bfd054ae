/**
 * Alert rules, each kind, over a real (SQLite) store with an injected clock: what fires, what is
 * counted into one alert, what a response quarantines (and what it never does), and undo.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { isWritError } from '@writ/spiffe';
import { parseReport } from '@writ/vuln';
import { trivyReport } from '../../../../test/e2e/vuln-fixtures.ts';
import { createMetrics } from '../metrics.ts';
import { sqliteTestStore, type TestStore } from '../testing/stores.ts';
import type { DecisionRecord } from '../store/types.ts';
import { ALERTS_DEFAULTS, AlertService, alertsConfig } from './service.ts';
import { parseAlertRules } from './rules.ts';

const T0 = Date.parse('2026-12-03T10:00:00Z');
const WEB = 'spiffe://example.org/ns/shop/web';
const DB = 'spiffe://example.org/ns/shop/db';
const CACHE = 'spiffe://example.org/ns/shop/cache';
const AGENT = 'spiffe://example.org/writ/agent/node1';

const DB_POLICY = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: db }
spec:
  to: ${DB}
  mode: enforce
  rules:
    - { effect: allow, from: [${WEB}] }
`;

const rule = (name: string, spec: string): string => `apiVersion: writ.dev/v1
kind: AlertRule
metadata: { name: ${name} }
spec:
${spec
  .trim()
  .split('\n')
  .map((l) => `  ${l}`)
  .join('\n')}
`;

let seq = 0;
const decision = (from: string, to: string, d: DecisionRecord['decision'] = 'allow', reason = 'ALLOW_RULE'): DecisionRecord => ({
  id: `d${++seq}`,
  at: T0,
  from,
  to,
  action: 'GET /',
  decision: d,
  reason,
  policyRevision: 1,
  rule: '',
  reporter: AGENT,
});

describe('AlertRule documents', () => {
  it('reads a rule with its defaults and parameters', () => {
    const [r] = parseAlertRules(
      rule('spikes', 'kind: deny-spike\nto: [spiffe://example.org/ns/shop/**]\nparams: { z: 3, interval: 30s }\nrespond: { quarantine: { ttl: 15m } }'),
    );
    assert.equal(r?.kind, 'deny-spike');
    assert.deepEqual(r?.denySpike, { alpha: 0.1, z: 3, minRequests: 20, intervalMs: 30_000, minStdDev: 0.05 });
    assert.equal(r?.windowMs, 3_600_000);
    assert.deepEqual(r?.respond, { quarantineTtlMs: 900_000 });
    assert.equal(r?.to[0]?.source, 'spiffe://example.org/ns/shop/**');
  });

  it('refuses what a rule cannot mean, with line numbers', () => {
    const problems = (text: string): string => {
      try {
        parseAlertRules(text, { file: 'alerts.yaml' });
        return 'accepted';
      } catch (err) {
        return (err as Error).message;
      }
    };
    assert.match(problems(rule('a', 'kind: new-edges')), /alerts\.yaml:5:\d+.*spec\.kind must be one of new-edge, new-identity/s);
    assert.match(problems(rule('a', 'kind: key-expiry\nrespond: { quarantine: { ttl: 15m } }')), /:6:\d+.*key-expiry names no identity to act on/s);
    assert.match(problems(rule('a', 'kind: quarantine\nfrom: [spiffe://example.org/x]')), /:6:\d+.*spec\.from applies to the kinds about calls/s);
    assert.match(problems(rule('a', 'kind: deny-spike\nparams: { alpha: 2 }')), /spec\.params\.alpha must be a number above 0 and at most 1/);
    assert.match(problems(rule('a', 'kind: new-edge\nparams: { z: 2 }')), /new-edge takes no parameters/);
    assert.match(
      problems(rule('a', 'kind: new-edge\nwebhook: { url: ftp://x, secretFile: rel.key }')),
      /url must be an http.*secretFile must be an absolute path/s,
    );
    assert.match(problems(rule('a', 'kind: new-edge\nrespond: { quarantine: { ttl: 1s } }')), /spec\.respond\.quarantine\.ttl/);
  });

  it('reads the server config: defaults, limits, unknown settings refused', () => {
    assert.deepEqual(alertsConfig(undefined), ALERTS_DEFAULTS);
    assert.equal(alertsConfig({ maxQuarantinesPerHour: 3, interval: '5s' }).intervalMs, 5000);
    const code = (v: unknown): string => {
      try {
        alertsConfig(v);
        return 'ok';
      } catch (err) {
        return isWritError(err) ? `${err.code} ${(err as { field?: string }).field}` : String(err);
      }
    };
    assert.equal(code({ bogus: 1 }), 'ERR_CONFIG_INVALID alerts.bogus');
    assert.equal(code({ maxQuarantinesPerHour: -1 }), 'ERR_CONFIG_INVALID alerts.maxQuarantinesPerHour');
    assert.equal(code({ webhook: { url: 'https://x' } }), 'ERR_CONFIG_INVALID alerts.webhook.secretFile');
  });
});

describe('alert rules over decisions, store changes and the periodic check', () => {
  let t: TestStore;
  let now = T0;
  let alerts: AlertService;
  let metrics: ReturnType<typeof createMetrics>;
  const apply = async (policies: Record<string, string>): Promise<void> => {
    const cur = await t.store.getPolicyRevision();
    await t.store.appendPolicyRevision({ createdAt: now, createdBy: 't', comment: '', policies }, cur?.revision ?? 0);
    await alerts.reload();
  };
  const observe = async (records: DecisionRecord[]): Promise<void> => {
    await alerts.observeDecisions(records);
    await t.store.addDecisions(records);
  };
  before(async () => {
    t = await sqliteTestStore();
  });
  after(async () => t.dispose());
  beforeEach(async () => {
    now = T0;
    metrics = createMetrics();
    alerts = new AlertService({
      store: t.store,
      clock: () => now,
      log: pino({ level: 'silent' }),
      config: { ...ALERTS_DEFAULTS, intervalMs: 3_600_000, maxQuarantinesPerHour: 2 },
      trustDomain: 'example.org',
      metrics,
    });
    await alerts.start();
  });
  afterEach(async () => {
    await alerts.close();
    for (const q of await t.store.listQuarantine(Number.MAX_SAFE_INTEGER)) await t.store.removeQuarantine(q.spiffeId);
    await t.store.pruneAlerts(Number.MAX_SAFE_INTEGER);
    await t.store.pruneDecisions(Number.MAX_SAFE_INTEGER);
  });

  it('new-edge: a caller never seen calling an enforce-mode destination, once; repeats counted; other destinations not', async () => {
    await apply({ db: DB_POLICY, 'AlertRule/new-db-callers': rule('new-db-callers', 'kind: new-edge') });
    await observe([decision(WEB, DB), decision(WEB, DB), decision(WEB, CACHE)]);
    const list = await alerts.list({ limit: 10 });
    assert.equal(list.length, 1, 'the cache has no enforce-mode policy');
    assert.equal(list[0]?.kind, 'new-edge');
    assert.deepEqual(list[0]?.details, { from: WEB, to: DB, action: 'GET /', decision: 'allow', reason: 'ALLOW_RULE' });
    await observe([decision(WEB, DB)]);
    assert.equal((await alerts.list({ limit: 10 })).length, 1, 'a known edge is no news');
    // A server restarted forgets its state; the store still knows the edge.
    await alerts.close();
    alerts = new AlertService({ store: t.store, clock: () => now, log: pino({ level: 'silent' }), config: ALERTS_DEFAULTS, trustDomain: 'example.org' });
    await alerts.start();
    await observe([decision(WEB, DB)]);
    assert.equal((await alerts.list({ limit: 10 }))[0]?.count, 1, 'known from the stored decisions');
    const other = 'spiffe://example.org/ns/shop/batch';
    now += 1000;
    await observe([decision(other, DB, 'deny', 'NO_MATCHING_ALLOW')]);
    assert.deepEqual(
      (await alerts.list({ limit: 10 })).map((a) => a.key),
      [`${other} -> ${DB}`, `${WEB} -> ${DB}`],
    );
  });

  it('new-identity: an ID never seen calling or called', async () => {
    await apply({ 'AlertRule/new-ids': rule('new-ids', 'kind: new-identity') });
    await observe([decision(WEB, CACHE)]);
    assert.deepEqual((await alerts.list({ limit: 10 })).map((a) => a.key).sort(), [CACHE, WEB]);
    await observe([decision(CACHE, WEB)]);
    assert.equal((await alerts.list({ limit: 10 })).length, 2, 'both known now');
  });

  it('deny-spike: the deny rate of a bucket far above the edge EWMA, with at least minRequests', async () => {
    await apply({ 'AlertRule/spikes': rule('spikes', 'kind: deny-spike\nparams: { interval: 10s, minRequests: 20 }') });
    const bucket = async (total: number, denies: number): Promise<void> => {
      const batch = Array.from({ length: total }, (_, i) => (i < denies ? decision(WEB, DB, 'deny', 'DENY_RULE') : decision(WEB, DB)));
      await observe(batch);
      now += 10_000;
      await alerts.closeBuckets();
    };
    for (let i = 0; i < 5; i++) await bucket(30, i % 2);
    assert.deepEqual(await alerts.list({ limit: 10 }), [], 'one deny in 30 now and then is the normal rate');
    await bucket(10, 10);
    assert.deepEqual(await alerts.list({ limit: 10 }), [], 'fewer than minRequests say nothing');
    // Quarantine denies are left out: they are the response.
    await observe(Array.from({ length: 40 }, () => decision(WEB, DB, 'deny', 'QUARANTINED')));
    await bucket(30, 18);
    const [a] = await alerts.list({ limit: 10 });
    assert.equal(a?.kind, 'deny-spike');
    assert.equal(a?.details['requests'], 30);
    assert.equal(a?.details['denies'], 18);
    assert.ok((a?.details['z'] as number) >= 4, `z ${a?.details['z']}`);
  });

  it('critical-cve-call: a call into a workload running an image with a critical CVE', async () => {
    const digest = `sha256:${'c'.repeat(64)}`;
    await t.store.putReport(
      parseReport(
        trivyReport({
          digest,
          name: 'registry.example/shop/db',
          createdAt: new Date(now),
          vulns: [{ id: 'CVE-2026-9999', severity: 'CRITICAL', pkg: 'openssl', version: '3.0.1', fixed: '3.0.2' }],
        }),
      ),
      now,
    );
    await t.store.putAgentWorkloads(
      AGENT,
      null,
      [
        {
          key: 'c1',
          spiffeIds: [DB],
          containerId: 'c1',
          containerName: 'db',
          podUid: null,
          podName: null,
          namespace: 'shop',
          podOwner: null,
          imageDigest: digest,
          imageName: 'registry.example/shop/db',
          labels: {},
          annotations: {},
          owner: null,
        },
      ],
      now,
    );
    await apply({ 'AlertRule/vulnerable': rule('vulnerable', 'kind: critical-cve-call') });
    await observe([decision(WEB, DB), decision(WEB, CACHE)]);
    const [a] = await alerts.list({ limit: 10 });
    assert.equal(a?.key, `${WEB} -> ${DB}`);
    assert.deepEqual(a?.details['vulnerabilities'], ['CVE-2026-9999']);
    assert.equal((await alerts.list({ limit: 10 })).length, 1);
    await t.store.pruneWorkloads(Number.MAX_SAFE_INTEGER);
  });

  it('quarantine, key-expiry and federation-stale, from the store and the periodic check', async () => {
    await apply({
      'AlertRule/q': rule('q', 'kind: quarantine'),
      'AlertRule/keys': rule('keys', 'kind: key-expiry\nparams: { within: 1h }'),
      'AlertRule/fed': rule('fed', 'kind: federation-stale\nparams: { olderThan: 10m }'),
    });
    await t.store.putQuarantine({ spiffeId: CACHE, reason: 'r', createdBy: 'operator', createdAt: now, expiresAt: null });
    await alerts.settled();
    assert.deepEqual(
      (await alerts.list({ rule: 'q', limit: 10 })).map((a) => [a.key, a.details['createdBy']]),
      [[CACHE, 'operator']],
    );
    await t.store.saveAuthorities(
      [
        { id: 'soon', kind: 'jwt', serverId: 's', status: 'active', publicData: '{}', notBefore: now - 1, notAfter: now + 1_800_000 },
        { id: 'later', kind: 'x509', serverId: 's', status: 'active', publicData: '', notBefore: now - 1, notAfter: now + 86_400_000 },
      ],
      [],
    );
    await t.store.createFederation({
      trustDomain: 'peer.org',
      bundleEndpointUrl: 'https://peer.org/',
      profile: 'https_web',
      endpointSpiffeId: null,
      createdAt: now - 3_600_000,
      lastSuccessAt: now - 3_600_000,
      lastError: 'connect ECONNREFUSED',
      lastErrorCode: null,
      lastErrorAt: now,
      sequence: null,
      refreshHint: null,
      nextRefreshAt: now,
    });
    await alerts.tick();
    assert.deepEqual(
      (await alerts.list({ rule: 'keys', limit: 10 })).map((a) => a.key),
      ['soon'],
    );
    const [fed] = await alerts.list({ rule: 'fed', limit: 10 });
    assert.equal(fed?.details['lastError'], 'connect ECONNREFUSED');
    await alerts.tick();
    assert.equal((await alerts.list({ rule: 'fed', limit: 10 }))[0]?.count, 2, 'still stale: counted into the alert');
    await t.store.deleteFederation('peer.org');
    await t.store.saveAuthorities([], ['soon', 'later']);
  });

  it('raise(): alerts from elsewhere (the audit check), under their rules or a rule named after the kind', async () => {
    const [a] = await alerts.raise('audit-verification-failed', { index: 17, reason: 'leaf hash differs' });
    assert.equal(a?.rule, 'audit-verification-failed');
    await apply({ 'AlertRule/audit': rule('audit', 'kind: audit-verification-failed\nwindow: 10m') });
    const [b] = await alerts.raise('audit-verification-failed', { index: 18 });
    assert.equal(b?.rule, 'audit');
  });

  it('respond: quarantines the caller with the TTL as alert-rule:NAME, never Writ itself, at most N per hour; undo lifts it', async () => {
    await apply({ db: DB_POLICY, 'AlertRule/contain': rule('contain', 'kind: new-edge\nrespond: { quarantine: { ttl: 15m } }') });
    await observe([decision(WEB, DB)]);
    const [a] = await alerts.list({ limit: 10 });
    assert.deepEqual(a?.response, { quarantined: WEB, expiresAt: now + 900_000, undoneAt: null, undoneBy: null });
    const [q] = await t.store.listQuarantine(now);
    assert.equal(q?.spiffeId, WEB);
    assert.equal(q?.createdBy, 'alert-rule:contain');
    assert.equal(q?.expiresAt, now + 900_000);
    // Writ's own agent calling into the destination is alerted on, never quarantined.
    await observe([decision(AGENT, DB)]);
    assert.equal((await alerts.list({ limit: 10 })).find((x) => x.key.startsWith(AGENT))?.response, null);
    // Two per hour (the test's config): the third is alerted on and counted, not quarantined.
    await observe([decision(`${WEB}2`, DB), decision(`${WEB}3`, DB)]);
    const quarantined = (await t.store.listQuarantine(now)).map((x) => x.spiffeId).sort();
    assert.deepEqual(quarantined, [WEB, `${WEB}2`]);
    assert.equal((await metrics.alertResponses.get()).values.find((v) => v.labels.result === 'limited')?.value, 1);
    assert.equal((await metrics.alertResponses.get()).values.find((v) => v.labels.result === 'protected')?.value, 1);

    now += 60_000;
    const undone = await alerts.undo(a!.id, 'operator');
    assert.equal(undone.lifted, true);
    assert.equal(undone.alert.response?.undoneBy, 'operator');
    assert.equal(undone.alert.response?.undoneAt, now);
    assert.deepEqual(
      (await t.store.listQuarantine(now)).map((x) => x.spiffeId),
      [`${WEB}2`],
    );
    assert.equal((await alerts.undo(a!.id, 'operator')).lifted, false, 'undoing again changes nothing');
    // An operator's quarantine written since the response is not the rule's to lift.
    const [b] = (await alerts.list({ limit: 10 })).filter((x) => x.key.startsWith(`${WEB}2 `));
    await t.store.putQuarantine({ spiffeId: `${WEB}2`, reason: 'manual', createdBy: 'operator', createdAt: now, expiresAt: null });
    assert.equal((await alerts.undo(b!.id, 'operator')).lifted, false);
    assert.equal((await t.store.listQuarantine(now)).length, 1);
    const none = (await alerts.list({ limit: 10 })).find((x) => x.response === null)!;
    await assert.rejects(alerts.undo(none.id, 'operator'), (e) => isWritError(e, 'ERR_ALERT_NO_RESPONSE'));
    await assert.rejects(alerts.undo('nope', 'operator'), (e) => isWritError(e, 'ERR_NOT_FOUND'));
  });

  it('keeps its per-edge state bounded: the least recently seen edges are evicted and counted', async () => {
    await alerts.close();
    alerts = new AlertService({
      store: t.store,
      clock: () => now,
      log: pino({ level: 'silent' }),
      config: { ...ALERTS_DEFAULTS, maxEdges: 100 },
      trustDomain: 'example.org',
      metrics,
    });
    await alerts.start();
    await apply({ 'AlertRule/spikes': rule('spikes', 'kind: deny-spike') });
    await observe(Array.from({ length: 150 }, (_, i) => decision(`${WEB}-${i}`, DB)));
    assert.equal(alerts.evictions, 50);
    assert.equal((await metrics.alertEdgeEvictions.get()).values[0]?.value, 50);
  });
});
