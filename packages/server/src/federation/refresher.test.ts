/** The refresher on a real SQLite store with a fake clock and a fake network: no sleeps. */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { WritError, isWritError, type Certificate } from '@writ/spiffe';
import { sqliteTestStore, type TestStore } from '../testing/stores.ts';
import type { FederationRelationship } from '../store/types.ts';
import type { BundleEndpoint } from './fetch.ts';
import { DEFAULT_REFRESH_MS, FederationRefresher, MAX_REFRESH_MS, MIN_REFRESH_MS, federationStatus, refreshIntervalMs } from './refresher.ts';

const jwk = (kid: string): Record<string, unknown> => ({
  use: 'jwt-svid',
  kid,
  ...(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }) as object),
});

const rel = (trustDomain: string, now: number): FederationRelationship => ({
  trustDomain,
  bundleEndpointUrl: `https://${trustDomain}/`,
  profile: 'https_web',
  endpointSpiffeId: null,
  createdAt: now,
  lastSuccessAt: null,
  lastError: null,
  lastErrorCode: null,
  lastErrorAt: null,
  sequence: null,
  refreshHint: null,
  nextRefreshAt: now,
});

/** Stand-ins for our own CA certificates: only their identity is compared. */
const OWN = [{}, {}] as unknown as readonly Certificate[];

describe('federation refresher', () => {
  let t: TestStore;
  let now = 1_000_000;
  let answer: () => string = () => '{}';
  const fetched: BundleEndpoint[] = [];
  const logs: Array<{ level: number; msg: string }> = [];
  let refresher: FederationRefresher;
  const registry = new Registry();
  before(async () => {
    t = await sqliteTestStore();
    const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as { level: number; msg: string }) });
    refresher = new FederationRefresher({
      store: t.store,
      trustDomain: 'home.test',
      ownAuthorities: () => OWN,
      clock: () => now,
      random: () => 0.5,
      log,
      registry,
      fetch: async (endpoint) => {
        fetched.push(endpoint);
        return answer();
      },
    });
  });
  after(async () => {
    await refresher.close();
    await t.dispose();
  });

  it('bounds the refresh hint: at least 5 s, at most 1 h, 5 min without one', () => {
    assert.equal(refreshIntervalMs(0), MIN_REFRESH_MS);
    assert.equal(refreshIntervalMs(1), MIN_REFRESH_MS);
    assert.equal(refreshIntervalMs(120), 120_000);
    assert.equal(refreshIntervalMs(86_400), MAX_REFRESH_MS);
    assert.equal(refreshIntervalMs(null), DEFAULT_REFRESH_MS);
  });

  it('applies a bundle, plans the next fetch at the hint less jitter, and leaves peers not due alone', async () => {
    await t.store.createFederation(rel('peer.test', now));
    const k1 = jwk('k1');
    answer = () => JSON.stringify({ keys: [k1], spiffe_sequence: 10, spiffe_refresh_hint: 100 });
    await refresher.tick();
    const r = (await t.store.getFederation('peer.test'))!;
    assert.deepEqual([r.lastSuccessAt, r.sequence, r.refreshHint], [now, 10, 100]);
    assert.equal(r.nextRefreshAt, now + 95_000, 'jitter: up to 10% earlier (random 0.5: 5%)');
    const held = JSON.parse((await t.store.getFederatedBundle('peer.test'))!.bundle) as { keys: Array<{ kid: string }>; spiffe_refresh_hint?: number };
    assert.deepEqual(
      held.keys.map((k) => k.kid),
      ['k1'],
    );
    assert.equal(held.spiffe_refresh_hint, undefined, "the peer's hint is ours to read, not the agents'");
    fetched.length = 0;
    now += 60_000;
    await refresher.tick();
    assert.equal(fetched.length, 0, 'not due yet');
    now += 40_000;
    await refresher.tick();
    assert.equal(fetched.length, 1, 'due');
  });

  it('refuses a lower sequence, garbage and failures, keeps the last good bundle, and retries at the next interval', async () => {
    const before = (await t.store.getFederatedBundle('peer.test'))!.bundle;
    const cases: Array<[() => string, string]> = [
      [() => JSON.stringify({ keys: [jwk('old')], spiffe_sequence: 9 }), 'ERR_BUNDLE_SEQUENCE_STALE'],
      [() => 'not json', 'ERR_BUNDLE_ENDPOINT_INVALID'],
      [() => JSON.stringify({ keys: 'nope' }), 'ERR_BUNDLE_ENDPOINT_INVALID'],
      [
        () => {
          throw new WritError('ERR_BUNDLE_ENDPOINT_TIMEOUT', 'no complete answer within 10s');
        },
        'ERR_BUNDLE_ENDPOINT_TIMEOUT',
      ],
    ];
    for (const [a, code] of cases) {
      answer = a;
      await assert.rejects(refresher.refresh('peer.test'), (e) => isWritError(e, code));
      const r = (await t.store.getFederation('peer.test'))!;
      assert.equal(r.lastErrorCode, code);
      assert.equal(r.sequence, 10);
      assert.equal(r.nextRefreshAt, now + 95_000, `${code}: retried at the next polling interval (the last hint, 100 s, less jitter)`);
      assert.equal((await t.store.getFederatedBundle('peer.test'))!.bundle, before, `${code}: the last good bundle stays`);
    }
    answer = () => JSON.stringify({ keys: [jwk('k2')], spiffe_sequence: 11 });
    const ok = await refresher.refresh('peer.test');
    assert.deepEqual([ok.lastError, ok.lastErrorCode, ok.sequence, ok.refreshHint], [null, null, 11, null]);
  });

  it('says how stale a peer is: status, the metric, and a warning once past 3 refresh intervals', async () => {
    answer = () => {
      throw new WritError('ERR_BUNDLE_ENDPOINT_UNREACHABLE', 'cannot reach the bundle endpoint: ECONNREFUSED');
    };
    now += 10 * 60_000; // 10 min without a success; no hint: 5 min interval, stale past 15 min
    await assert.rejects(refresher.refresh('peer.test'));
    let s = federationStatus((await t.store.getFederation('peer.test'))!, now);
    assert.deepEqual([s.stalenessSeconds, s.stale], [600, false]);
    assert.equal(logs.at(-1)?.level, 30);
    now += 6 * 60_000;
    await assert.rejects(refresher.refresh('peer.test'));
    s = federationStatus((await t.store.getFederation('peer.test'))!, now);
    assert.deepEqual([s.stalenessSeconds, s.stale], [960, true]);
    assert.equal(logs.at(-1)?.level, 40, 'a warning');
    assert.match(logs.at(-1)!.msg, /stale/);
    const metric = await registry.getSingleMetricAsString('writ_federation_bundle_staleness_seconds');
    assert.match(metric, /writ_federation_bundle_staleness_seconds\{trust_domain="peer.test"\} 960/);
  });

  it("https_spiffe: a self-serving endpoint is checked with the peer bundle held, any other with its own trust domain's", async () => {
    answer = () => JSON.stringify({ keys: [] });
    const spiffeRel = (td: string, endpoint: string): FederationRelationship => ({
      ...rel(td, now),
      profile: 'https_spiffe',
      endpointSpiffeId: endpoint,
    });
    const anchorsOf = async (r: FederationRelationship): Promise<number> => {
      await t.store.createFederation(r);
      fetched.length = 0;
      await refresher.refresh(r.trustDomain).catch(() => undefined);
      return fetched[0]!.trustAnchors.length;
    };
    // No X.509 authority is held for these in this store: what is checked is where the anchors come from.
    assert.equal(await anchorsOf(spiffeRel('self.test', 'spiffe://self.test/server')), 0, 'self-serving, nothing held yet');
    assert.equal(await anchorsOf(spiffeRel('hosted.test', 'spiffe://home.test/bundle-server')), 2, 'an endpoint of ours: our own CAs');
    assert.equal(fetched[0]!.trustAnchors, OWN);
  });

  it('an unknown trust domain is ERR_FEDERATION_NOT_FOUND', async () => {
    await assert.rejects(refresher.refresh('nobody.test'), (e) => isWritError(e, 'ERR_FEDERATION_NOT_FOUND'));
  });
});
