/**
 * Vulnerability events and containment on both stores: which (vulnerability, digest, identity)
 * triples fire, with which cause, once while they stay affected, again after they stopped being
 * affected; an exception that expires (an injected suppression set, as the shared contract has it);
 * containment quarantining the identities in one write; the webhook config refused with its setting.
 */
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync } from 'node:crypto';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { OID, buildName, issueCertificate, toPem } from '@writ/spiffe';
import { parseReport } from '@writ/vuln';
import { trivyReport } from '../../../test/e2e/vuln-fixtures.ts';
import type { SuppressionSet } from '@writ/vuln';
import { STORE_FACTORIES, type TestStore } from './testing/stores.ts';
import type { VulnEvent, WorkloadInput } from './store/types.ts';
import { contain, quarantineVulnerability } from './vuln-containment.ts';
import { VULN_EVENTS_DEFAULTS, VulnEventWatcher, vulnEventsConfig } from './vuln-events.ts';
import { signBody } from './webhook.ts';

const WEB = `sha256:${'a1'.repeat(32)}`;
const DB = `sha256:${'d2'.repeat(32)}`;
const AGENT = 'spiffe://example.org/writ/agent/n1';
const T0 = Date.parse('2026-12-01T10:00:00Z');

const workload = (key: string, spiffeId: string, imageDigest: string, owner: string): WorkloadInput => ({
  key,
  spiffeIds: [spiffeId],
  containerId: key,
  containerName: 'main',
  podUid: `uid-${key}`,
  podName: `${key}-1`,
  namespace: 'shop',
  podOwner: null,
  imageDigest,
  imageName: 'registry.example/shop/app',
  labels: {},
  annotations: {},
  owner,
});
const report = (digest: string, vulns: Array<{ id: string; severity: 'CRITICAL' | 'HIGH' | 'MEDIUM' }>, at: number) =>
  parseReport(
    trivyReport({
      digest,
      name: 'registry.example/shop/app',
      createdAt: new Date(at),
      vulns: vulns.map((v) => ({ ...v, pkg: 'openssl', version: '3.0.1', fixed: '3.0.2' })),
    }),
  );

for (const factory of STORE_FACTORIES) {
  describe(`vulnerability events and containment: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    let now = T0;
    // An exception on CVE-2026-0002 in force until T0 + 10 min (what a VulnException would give).
    const expiresAt = T0 + 600_000;
    const suppressions: SuppressionSet = {
      ids: () => ['CVE-2026-0002'],
      match: (f, at) => (f.vulnId === 'CVE-2026-0002' && at < expiresAt ? { by: 'exception', name: 'db-accepted', reason: 'TICKET-1' } : undefined),
      nextExpiry: (at) => (at < expiresAt ? expiresAt : undefined),
    };
    let watcher: VulnEventWatcher;
    before(async () => {
      t = await factory();
      watcher = new VulnEventWatcher({
        store: t.store,
        clock: () => now,
        log: pino({ level: 'silent' }),
        // No timer here: the test ticks it.
        config: { ...VULN_EVENTS_DEFAULTS, intervalMs: 3_600_000 },
        suppressions: async () => suppressions,
      });
      watcher.start();
    });
    after(async () => {
      await watcher.close();
      await t.dispose();
    });
    /** The events recorded once the store changes so far were evaluated. */
    const evaluated = async (tick = false): Promise<VulnEvent[]> => {
      const before = await t.store.vulnEventCursor();
      if (tick) await watcher.tick();
      await watcher.settled();
      return t.store.queryVulnEvents({ after: before, limit: 100 });
    };

    it('a report making a running image affected: one event per identity, cause report; the same state again: none', async () => {
      await t.store.putAgentWorkloads(
        AGENT,
        'n1',
        [workload('web', 'spiffe://example.org/web', WEB, 'payments'), workload('db', 'spiffe://example.org/db', DB, 'dba')],
        now,
      );
      assert.deepEqual(await evaluated(), []);
      now += 1000;
      await t.store.putReport(
        report(
          WEB,
          [
            { id: 'CVE-2026-0001', severity: 'CRITICAL' },
            { id: 'CVE-2026-0009', severity: 'MEDIUM' },
          ],
          now,
        ),
        now,
      );
      now += 1000;
      const events = await evaluated();
      assert.deepEqual(
        events.map((e) => [e.cause, e.vulnerability, e.severity, e.imageDigest, e.spiffeId, e.owner, e.node, e.pod]),
        [['report', 'CVE-2026-0001', 'critical', WEB, 'spiffe://example.org/web', 'payments', 'n1', 'web-1']],
        'the medium one is below the default minSeverity high',
      );
      now += 1000;
      assert.deepEqual(await evaluated(), [], 'one event while it stays affected');
      const stored = await t.store.queryVulnEvents({ limit: 10 });
      assert.deepEqual(
        stored.map((e) => e.id),
        events.map((e) => e.id),
      );
      assert.equal(await t.store.vulnEventCursor(), stored[0]!.seq);
    });

    it('a newly running workload on an affected image: cause workload', async () => {
      now += 1000;
      await t.store.putAgentWorkloads(
        AGENT,
        'n1',
        [
          workload('web', 'spiffe://example.org/web', WEB, 'payments'),
          workload('db', 'spiffe://example.org/db', DB, 'dba'),
          workload('web2', 'spiffe://example.org/web-canary', WEB, 'payments'),
        ],
        now,
      );
      now += 1000;
      const events = await evaluated();
      assert.deepEqual(
        events.map((e) => [e.cause, e.spiffeId, e.pod]),
        [['workload', 'spiffe://example.org/web-canary', 'web2-1']],
      );
    });

    it('a suppressed finding raises nothing until its exception expires: then cause exception-expired', async () => {
      now += 1000;
      await t.store.putReport(report(DB, [{ id: 'CVE-2026-0002', severity: 'HIGH' }], now), now);
      now += 1000;
      assert.deepEqual(await evaluated(), [], 'suppressed by the exception');
      now = expiresAt + 1000;
      // Heartbeats keep the workloads running (an expiry is no write: the timer evaluates).
      await t.store.putAgentWorkloads(
        AGENT,
        'n1',
        [
          workload('web', 'spiffe://example.org/web', WEB, 'payments'),
          workload('db', 'spiffe://example.org/db', DB, 'dba'),
          workload('web2', 'spiffe://example.org/web-canary', WEB, 'payments'),
        ],
        now,
      );
      const events = await evaluated(true);
      assert.deepEqual(
        events.map((e) => [e.cause, e.vulnerability, e.severity, e.spiffeId, e.owner]),
        [['exception-expired', 'CVE-2026-0002', 'high', 'spiffe://example.org/db', 'dba']],
      );
    });

    it('containment quarantines every identity running an affected image, in one write, the CVE in the reason', async () => {
      now += 1000;
      const dry = await contain(t.store, { vulnId: 'CVE-2026-0001', reason: 'exploited', minSeverity: 'high', createdBy: 'operator', now, dryRun: true });
      assert.deepEqual(
        dry.quarantined.map((q) => q.spiffeId),
        ['spiffe://example.org/web', 'spiffe://example.org/web-canary'],
      );
      assert.deepEqual(await t.store.listQuarantine(now), [], 'a dry run writes nothing');
      const versionBefore = await t.store.quarantineVersion(now);
      // An operator's quarantine of one of them stays as it was.
      await t.store.putQuarantine({ spiffeId: 'spiffe://example.org/web-canary', reason: 'manual', createdBy: 'admin', createdAt: now, expiresAt: null });
      const c = await contain(t.store, { vulnId: 'CVE-2026-0001', reason: 'exploited', ttlMs: 3_600_000, minSeverity: 'high', createdBy: 'operator', now });
      assert.deepEqual(
        [c.quarantined.map((q) => q.spiffeId), c.alreadyQuarantined.map((q) => q.spiffeId)],
        [['spiffe://example.org/web'], ['spiffe://example.org/web-canary']],
      );
      assert.deepEqual(c.quarantined[0]!.workloads, [{ digest: WEB, node: 'n1', namespace: 'shop', pod: 'web-1', owner: 'payments' }]);
      const q = await t.store.listQuarantine(now);
      assert.deepEqual(
        q.map((x) => [x.spiffeId, x.reason, x.expiresAt]),
        [
          ['spiffe://example.org/web', '[CVE-2026-0001] exploited', now + 3_600_000],
          ['spiffe://example.org/web-canary', 'manual', null],
        ],
      );
      assert.equal(quarantineVulnerability(q[0]!.reason), 'CVE-2026-0001');
      assert.equal(quarantineVulnerability('manual'), undefined);
      assert.ok((await t.store.quarantineVersion(now)) > versionBefore, 'agents see a new quarantine version');
    });

    it('a workload that stops running is forgotten; running it again is a new event', async () => {
      now += 1000;
      await t.store.putAgentWorkloads(AGENT, 'n1', [workload('db', 'spiffe://example.org/db', DB, 'dba')], now);
      assert.deepEqual(await evaluated(), []);
      now += 1000;
      await t.store.putAgentWorkloads(
        AGENT,
        'n1',
        // A container started again has a new container ID (the same one back within a minute is a reconnect).
        [workload('db', 'spiffe://example.org/db', DB, 'dba'), workload('web-2', 'spiffe://example.org/web', WEB, 'payments')],
        now,
      );
      const events = await evaluated();
      assert.deepEqual(
        events.map((e) => [e.cause, e.spiffeId]),
        [['workload', 'spiffe://example.org/web']],
      );
      // Following: after a cursor, in arrival order.
      const all = await t.store.queryVulnEvents({ after: 0, limit: 100 });
      assert.deepEqual(
        all.map((e) => e.spiffeId),
        ['spiffe://example.org/web', 'spiffe://example.org/web-canary', 'spiffe://example.org/db', 'spiffe://example.org/web'],
      );
      assert.deepEqual(
        (await t.store.queryVulnEvents({ after: all[1]!.seq!, limit: 1 })).map((e) => e.spiffeId),
        ['spiffe://example.org/db'],
      );
    });
  });
}

for (const factory of STORE_FACTORIES) {
  // The timer reads the whole running set only when something may have changed: 100,000 workloads
  // re-read every 30 s for nothing held the answers up behind it.
  describe(`vulnerability events: the timer skips an idle period: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    let now = T0;
    const expiresAt = T0 + 150_000;
    const suppressions: SuppressionSet = {
      ids: () => ['CVE-2026-0002'],
      match: (f, at) => (f.vulnId === 'CVE-2026-0002' && at < expiresAt ? { by: 'exception', name: 'db-accepted', reason: 'TICKET-1' } : undefined),
      nextExpiry: (at) => (at < expiresAt ? expiresAt : undefined),
    };
    let watcher: VulnEventWatcher;
    const N2 = 'spiffe://example.org/writ/agent/n2';
    const mine = [workload('web', 'spiffe://example.org/web', WEB, 'payments'), workload('db', 'spiffe://example.org/db', DB, 'dba')];
    const other = [workload('web-n2', 'spiffe://example.org/web-n2', WEB, 'payments')];
    before(async () => {
      t = await factory();
      watcher = new VulnEventWatcher({
        store: t.store,
        clock: () => now,
        log: pino({ level: 'silent' }),
        config: { ...VULN_EVENTS_DEFAULTS, intervalMs: 3_600_000 },
        suppressions: async () => suppressions,
      });
      watcher.start();
      await t.store.putAgentWorkloads(AGENT, 'n1', mine, now);
      await t.store.putAgentWorkloads(N2, 'n2', other, now);
      await t.store.putReport(report(WEB, [{ id: 'CVE-2026-0001', severity: 'CRITICAL' }], now), now);
      await t.store.putReport(report(DB, [{ id: 'CVE-2026-0002', severity: 'HIGH' }], now), now);
      await watcher.settled();
    });
    after(async () => {
      await watcher.close();
      await t.dispose();
    });
    /** Ticks the timer `dt` ms later; how many evaluations that made, and the events they recorded. */
    const tickAfter = async (dt: number, heartbeat: 'both' | 'n1' = 'both'): Promise<{ evaluations: number; events: string[] }> => {
      now += dt;
      // Agents' heartbeats: the same workloads again, no write anyone needs to hear of.
      await t.store.putAgentWorkloads(AGENT, 'n1', mine, now);
      if (heartbeat === 'both') await t.store.putAgentWorkloads(N2, 'n2', other, now);
      await watcher.settled();
      const [n, cursor] = [watcher.evaluations, await t.store.vulnEventCursor()];
      await watcher.tick();
      await watcher.settled();
      return {
        evaluations: watcher.evaluations - n,
        events: (await t.store.queryVulnEvents({ after: cursor, limit: 100 })).map((e) => `${e.cause} ${e.vulnerability} ${e.spiffeId}`),
      };
    };

    it('ticks with only heartbeats between them evaluate nothing', async () => {
      assert.equal((await t.store.queryVulnEvents({ after: 0, limit: 100 })).length, 2, 'the first evaluation: web and web-n2 on CVE-2026-0001');
      for (let i = 0; i < 3; i++) assert.deepEqual(await tickAfter(20_000), { evaluations: 0, events: [] });
    });

    it('a write makes the next tick evaluate (once), even one the watcher evaluated already', async () => {
      await t.store.putReport(
        report(
          DB,
          [
            { id: 'CVE-2026-0002', severity: 'HIGH' },
            { id: 'CVE-2026-0009', severity: 'MEDIUM' },
          ],
          now + 1,
        ),
        now + 1,
      );
      await watcher.settled();
      // The write's own evaluation ran; the timer's next tick finds nothing new.
      assert.deepEqual(await tickAfter(1000), { evaluations: 0, events: [] });
      // A write heard while the last evaluation could have missed it: the tick evaluates.
      watcher.changed();
      assert.deepEqual(await tickAfter(1000), { evaluations: 1, events: [] });
      assert.deepEqual(await tickAfter(1000), { evaluations: 0, events: [] });
    });

    it('an exception that expires makes one evaluation, at the first tick after it, with its event', async () => {
      while (now + 20_000 < expiresAt - 1000) assert.deepEqual(await tickAfter(20_000), { evaluations: 0, events: [] });
      assert.deepEqual(await tickAfter(expiresAt - 1000 - now), { evaluations: 0, events: [] });
      assert.deepEqual(await tickAfter(2000), { evaluations: 1, events: ['exception-expired CVE-2026-0002 spiffe://example.org/db'] });
      assert.deepEqual(await tickAfter(20_000), { evaluations: 0, events: [] }, 'no exception left to expire');
    });

    it('a workload whose agent fell silent makes one evaluation once it stops counting as running; reported again, a new event', async () => {
      assert.deepEqual(await tickAfter(30_000, 'n1'), { evaluations: 0, events: [] }, 'n2 silent for 30 s: still running');
      assert.deepEqual(await tickAfter(31_000, 'n1'), { evaluations: 1, events: [] }, 'n2 silent past the grace period: web-n2 runs no more');
      assert.deepEqual(await tickAfter(30_000, 'n1'), { evaluations: 0, events: [] });
      // n2 is back: the same workload reported again is a change of the running set.
      now += 1000;
      await t.store.putAgentWorkloads(N2, 'n2', other, now);
      await watcher.settled();
      assert.deepEqual(
        (await t.store.queryVulnEvents({ after: 0, limit: 100 })).at(-1)?.spiffeId,
        'spiffe://example.org/web-n2',
        'affected again: a new event',
      );
      assert.deepEqual(await tickAfter(1000), { evaluations: 0, events: [] });
    });
  });
}

for (const factory of STORE_FACTORIES) {
  // A large running set is stored in statements of a few hundred rows: the sets must come out whole across their seams.
  describe(`vulnerability exposures of a large running set: ${factory.name.replace('TestStore', '')}`, () => {
    let t: TestStore;
    before(async () => {
      t = await factory();
    });
    after(() => t.dispose());
    const exposure = (i: number, at: number): Omit<VulnEvent, 'seq'> => ({
      id: `ev-${at}-${i}`,
      at,
      cause: 'report',
      vulnerability: `CVE-2026-${String(1000 + (i % 7)).padStart(4, '0')}`,
      imageDigest: `sha256:${i.toString(16).padStart(64, '0')}`,
      spiffeId: `spiffe://example.org/w${i}`,
      severity: 'high',
      owner: i % 2 ? 'payments' : null,
      node: 'n1',
      namespace: 'shop',
      pod: `p${i}`,
    });
    const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, k) => from + k);

    it('1,000 exposures: one event each, in order with consecutive seqs; then 450 gone and 450 new: events for the new ones only', async () => {
      const first = await t.store.syncVulnExposures(range(0, 1000).map((i) => exposure(i, T0)));
      assert.equal(first.length, 1000);
      assert.deepEqual(
        first.map((e) => e.spiffeId),
        range(0, 1000).map((i) => `spiffe://example.org/w${i}`),
      );
      assert.deepEqual(
        first.map((e) => e.seq! - first[0]!.seq!),
        range(0, 1000),
      );
      assert.equal(first[1]!.owner, 'payments');
      assert.equal(first[0]!.owner, null);
      // The same set again: nothing new.
      assert.deepEqual(await t.store.syncVulnExposures(range(0, 1000).map((i) => exposure(i, T0 + 1))), []);
      // 450 stop being affected, 450 others start; the ones that stayed raise nothing.
      const second = await t.store.syncVulnExposures(range(450, 1450).map((i) => exposure(i, T0 + 2)));
      assert.deepEqual(
        second.map((e) => e.spiffeId),
        range(1000, 1450).map((i) => `spiffe://example.org/w${i}`),
      );
      assert.equal(second[0]!.seq, first[999]!.seq! + 1);
      // Those that left are forgotten: affected again, they are new events.
      const third = await t.store.syncVulnExposures(range(0, 1450).map((i) => exposure(i, T0 + 3)));
      assert.deepEqual(
        third.map((e) => e.spiffeId),
        range(0, 450).map((i) => `spiffe://example.org/w${i}`),
      );
      const stored = await t.store.queryVulnEvents({ after: 0, limit: 10_000 });
      assert.equal(stored.length, 1000 + 450 + 450);
      assert.deepEqual(stored.at(-1), third.at(-1));
    });
  });
}

describe('vulnEvents config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'writ-vuln-events-config-'));
  writeFileSync(join(dir, 'secret'), 'an-hmac-key-of-enough-bytes\n');
  writeFileSync(join(dir, 'short'), 'short\n');

  it('defaults: minSeverity high, no webhook', () => {
    assert.deepEqual(vulnEventsConfig(undefined), { minSeverity: 'high', intervalMs: 30_000 });
  });

  it('reads the webhook secret from its file', () => {
    const c = vulnEventsConfig({ minSeverity: 'critical', interval: '10s', webhook: { url: 'https://hooks.example/writ', secretFile: join(dir, 'secret') } });
    assert.equal(c.minSeverity, 'critical');
    assert.equal(c.intervalMs, 10_000);
    assert.equal(c.webhook?.secret.toString(), 'an-hmac-key-of-enough-bytes');
    assert.equal(signBody(c.webhook!.secret, '{"a":1}'), `sha256=${createHmac('sha256', 'an-hmac-key-of-enough-bytes').update('{"a":1}').digest('hex')}`);
  });

  it('refuses bad settings, naming them', () => {
    const code = (v: unknown): string => {
      try {
        vulnEventsConfig(v);
        return 'ok';
      } catch (err) {
        return `${(err as { code: string }).code} ${(err as { field: string }).field}`;
      }
    };
    assert.equal(code({ minSeverity: 'severe' }), 'ERR_CONFIG_INVALID vulnEvents.minSeverity');
    assert.equal(code({ webhook: { url: 'ftp://x', secretFile: join(dir, 'secret') } }), 'ERR_CONFIG_INVALID vulnEvents.webhook.url');
    assert.equal(code({ webhook: { url: 'https://x' } }), 'ERR_CONFIG_INVALID vulnEvents.webhook.secretFile');
    assert.equal(code({ webhook: { url: 'https://x', secretFile: join(dir, 'short') } }), 'ERR_CONFIG_INVALID vulnEvents.webhook.secretFile');
    assert.equal(code({ webhook: { url: 'https://x', secretFile: join(dir, 'missing') } }), 'ERR_CONFIG_INVALID vulnEvents.webhook.secretFile');
    assert.equal(code({ interval: 'soon' }), 'ERR_CONFIG_INVALID vulnEvents.interval');
    assert.equal(code({ hook: {} }), 'ERR_CONFIG_INVALID vulnEvents.hook');
  });
});

describe('vulnerability events: the webhook over HTTPS', () => {
  it('signs each event, trusts the configured CA, retries a 503 with backoff and does not retry a 400', async () => {
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const cert = issueCertificate(
      {
        subject: buildName([[OID.commonName, 'hooks']]),
        spki: k.publicKey.export({ format: 'der', type: 'spki' }),
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 3_600_000),
        ca: true,
        uris: [],
        ipAddresses: [Buffer.from([127, 0, 0, 1])],
      },
      { cert: undefined, signer: { key: k.privateKey, keyType: 'ec-p256' } },
    );
    const answers = [503, 204, 400, 204];
    const got: Array<{ status: number; id: string; valid: boolean }> = [];
    const secret = Buffer.from('an-hmac-key-of-enough-bytes');
    const receiver = createHttpsServer({ key: k.privateKey.export({ format: 'pem', type: 'pkcs8' }), cert: toPem('CERTIFICATE', cert.der) }, (req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        const status = answers.shift() ?? 204;
        got.push({ status, id: String(req.headers['x-writ-event-id']), valid: req.headers['x-writ-signature'] === signBody(secret, body) });
        res.statusCode = status;
        res.end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
    const t = await STORE_FACTORIES[0]!();
    let now = T0;
    const waits: number[] = [];
    const watcher = new VulnEventWatcher({
      store: t.store,
      clock: () => now,
      log: pino({ level: 'silent' }),
      config: {
        minSeverity: 'high',
        intervalMs: 3_600_000,
        webhook: { url: `https://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`, secret, ca: toPem('CERTIFICATE', cert.der) },
      },
      suppressions: async () => ({ ids: () => [], match: () => undefined, nextExpiry: () => undefined }),
      backoffMs: (n) => (waits.push(n), 5),
    });
    try {
      watcher.start();
      await t.store.putAgentWorkloads(
        AGENT,
        'n1',
        [workload('web', 'spiffe://example.org/web', WEB, 'payments'), workload('db', 'spiffe://example.org/db', DB, 'dba')],
        now,
      );
      now += 1000;
      await t.store.putReport(
        report(
          WEB,
          [
            { id: 'CVE-2026-0001', severity: 'CRITICAL' },
            { id: 'CVE-2026-0003', severity: 'HIGH' },
          ],
          now,
        ),
        now,
      );
      await watcher.settled();
      await watcher.flushed();
      const events = await t.store.queryVulnEvents({ after: 0, limit: 10 });
      assert.equal(events.length, 2);
      assert.deepEqual(
        got.map((g) => [g.status, g.id, g.valid]),
        [
          [503, events[0]!.id, true],
          [204, events[0]!.id, true],
          [400, events[1]!.id, true],
        ],
        'the 503 retried, the 400 given up on',
      );
      assert.deepEqual(waits, [1]);
    } finally {
      await watcher.close();
      await t.dispose();
      receiver.close();
    }
  });
});
