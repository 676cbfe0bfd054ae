/** The refresher on a real SQLite store with a fake clock and a fake network (no sleeps); and over a real https_spiffe endpoint on both stores. */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { createServer, type Server } from 'node:https';
import {
  OID,
  WritError,
  buildName,
  certificatesToPem,
  formatBundleJson,
  isWritError,
  issueCertificate,
  jwkOf,
  parseBundleJson,
  toPem,
  type Certificate,
} from '@writ/spiffe';
import { generateSigner } from '../ca/keys.ts';
import { STORE_FACTORIES, sqliteTestStore, type TestStore } from '../testing/stores.ts';
import { httpsBundleFetcher } from './fetch.ts';
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

/** A CA of the peer, and an SVID it signs: what a real https_spiffe bundle endpoint serves with. */
function peerCa(name: string): { cert: Certificate; signer: ReturnType<typeof generateSigner> } {
  const signer = generateSigner('ec-p256');
  const cert = issueCertificate(
    {
      subject: buildName([[OID.commonName, name]]),
      spki: signer.publicKey.export({ format: 'der', type: 'spki' }),
      notBefore: new Date(Date.now() - 3_600_000),
      notAfter: new Date(Date.now() + 3_600_000),
      ca: true,
      uris: ['spiffe://peer.test'],
    },
    { cert: undefined, signer },
  );
  return { cert, signer };
}

for (const factory of STORE_FACTORIES)
  describe(`federation refresher over a real https_spiffe endpoint, ${factory.name.replace('TestStore', '')}`, () => {
    const ENDPOINT_ID = 'spiffe://peer.test/bundle-server';
    const ca = peerCa('peer-a');
    const second = peerCa('peer-b');
    const third = peerCa('peer-c');
    let t: TestStore;
    let server: Server;
    let body = '{"keys":[]}';
    let refresher: FederationRefresher;
    before(async () => {
      t = await factory();
      const k = generateSigner('ec-p256');
      const leaf = issueCertificate(
        {
          subject: buildName([]),
          spki: k.publicKey.export({ format: 'der', type: 'spki' }),
          notBefore: new Date(Date.now() - 3_600_000),
          notAfter: new Date(Date.now() + 3_600_000),
          ca: false,
          uris: [ENDPOINT_ID],
        },
        ca,
      );
      server = createServer({ cert: certificatesToPem([leaf]), key: toPem('PRIVATE KEY', k.key.export({ format: 'der', type: 'pkcs8' })) }, (req, res) => {
        req.resume();
        res.end(body);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      const a = server.address();
      const now = Date.now();
      await t.store.createFederation({
        ...rel('peer.test', now),
        bundleEndpointUrl: `https://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/bundle.json`,
        profile: 'https_spiffe',
        endpointSpiffeId: ENDPOINT_ID,
      });
      // The bootstrap bundle: the peer's CA, which authenticates its endpoint.
      await t.store.setFederatedBundle({
        trustDomain: 'peer.test',
        bundle: JSON.stringify(formatBundleJson({ trustDomain: 'peer.test', x509Authorities: [ca.cert], jwtAuthorities: new Map() })),
        updatedAt: now,
      });
      refresher = new FederationRefresher({
        store: t.store,
        trustDomain: 'home.test',
        ownAuthorities: () => OWN,
        fetch: httpsBundleFetcher({ timeoutMs: 5000, maxBytes: 64 * 1024 }),
        clock: Date.now,
        log: pino({ level: 'silent' }),
        registry: new Registry(),
      });
    });
    after(async () => {
      await refresher?.close();
      server?.closeAllConnections();
      server?.close();
      await t?.dispose();
    });

    it('x509-svid keys with no or an empty x5c are ignored, of several x5c values the first is used, and the rest of the bundle is stored (X509-SVID 6.2)', async () => {
      const x509 = (x5c: unknown): Record<string, unknown> => ({ use: 'x509-svid', ...jwkOf(second.signer.publicKey), ...(x5c === undefined ? {} : { x5c }) });
      const b64 = (c: Certificate): string => c.der.toString('base64');
      body = JSON.stringify({
        keys: [x509(undefined), x509([]), x509([b64(ca.cert), b64(second.cert)]), x509([b64(third.cert)]), jwk('j1')],
        spiffe_sequence: 1,
      });
      const r = await refresher.refresh('peer.test');
      assert.deepEqual([r.lastErrorCode, r.sequence], [null, 1], r.lastError ?? '');
      const held = parseBundleJson('peer.test', (await t.store.getFederatedBundle('peer.test'))!.bundle);
      assert.deepEqual(
        held.x509Authorities.map((c) => c.der.toString('hex')),
        [ca.cert, third.cert].map((c) => c.der.toString('hex')),
        'the first of several x5c values and the lone one; nothing of the keys without one',
      );
      assert.deepEqual([...held.jwtAuthorities.keys()], ['j1']);
      // The authority kept from the first x5c still authenticates the endpoint at the next fetch.
      body = JSON.stringify({ keys: [x509([b64(ca.cert)])], spiffe_sequence: 2 });
      const again = await refresher.refresh('peer.test');
      assert.deepEqual([again.lastErrorCode, again.sequence], [null, 2], again.lastError ?? '');
    });
  });
