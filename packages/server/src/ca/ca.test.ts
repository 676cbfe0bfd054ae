import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createCsr, isWritError, parseCertificate, parseCsr, validateJwtSvid, verifyX509Svid, OID, buildName, issueCertificate } from '@writ/spiffe';
import { sqliteTestStore, type TestStore } from '../testing/stores.ts';
import { CertificateAuthority, type CaOptions } from './ca.ts';
import { generateSigner, readPrivateKey } from './keys.ts';

const H = 3_600_000;

function csrSpki(): Buffer {
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return parseCsr(createCsr({ key: k.privateKey, keyType: 'ec-p256' }, k.publicKey)).spki;
}

describe('certificate authority', () => {
  let t: TestStore;
  let dir: string;
  let now = Date.UTC(2026, 0, 1);
  const clock = (): number => now;
  const opts = (over: Partial<CaOptions> = {}): CaOptions => ({
    store: t.store,
    trustDomain: 'example.org',
    dataDir: dir,
    serverId: 's1',
    keyType: 'ec-p256',
    caTtlMs: 24 * H,
    x509SvidTtlMs: H,
    jwtSvidTtlMs: 5 * 60_000,
    clock,
    ...over,
  });
  before(async () => {
    t = await sqliteTestStore();
    dir = mkdtempSync(join(tmpdir(), 'writ-ca-'));
  });
  after(async () => {
    await t.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it('rotates prepared -> active -> old at 1/2 and 5/6 of the CA life, publishing the successor first', async () => {
    const ca = new CertificateAuthority(opts());
    await ca.rotate();
    const status = () =>
      ca
        .authorities()
        .filter((a) => a.kind === 'x509')
        .map((a) => a.status)
        .sort()
        .join(',');
    assert.equal(status(), 'active');
    const first = ca.bundle().x509Authorities[0]!;
    const kids0 = [...ca.bundle().jwtAuthorities.keys()];
    assert.equal(kids0.length, 1);
    const svid0 = ca.signX509Svid({ spiffeId: 'spiffe://example.org/web', spki: csrSpki() });

    now += 12 * H + 1000; // past half life
    await ca.rotate();
    assert.equal(status(), 'active,prepared');
    assert.equal(ca.bundle().x509Authorities.length, 2, 'the prepared CA is in the bundle before it signs');
    assert.equal(ca.bundle().jwtAuthorities.size, 2, 'the prepared JWT key is published before it signs');
    const tok = ca.signJwtSvid('spiffe://example.org/web', ['db']);
    assert.equal(JSON.parse(Buffer.from(tok.token.split('.')[0]!, 'base64url').toString()).kid, kids0[0], 'still signed by the active key');

    now += 8 * H; // past 5/6
    await ca.rotate();
    assert.equal(status(), 'active,old');
    const svid1 = ca.signX509Svid({ spiffeId: 'spiffe://example.org/web', spki: csrSpki() });
    assert.notDeepEqual(svid1.chain[0]!.issuer, undefined);
    assert.ok(!svid1.chain[0]!.der.equals(svid0.chain[0]!.der));
    // both the old SVID and the new one validate against the current bundle
    const nowDate = new Date(now);
    const b = new Map([['example.org', ca.bundle()]]);
    assert.throws(
      () => verifyX509Svid(svid0.chain, b, nowDate),
      (e) => isWritError(e, 'ERR_X509_EXPIRED'),
      'old SVID expired by TTL',
    );
    verifyX509Svid(svid1.chain, b, nowDate);
    assert.ok(
      ca.bundle().x509Authorities.some((c) => c.der.equals(first.der)),
      'old CA still published',
    );

    now += 5 * H; // the first CA has expired
    await ca.rotate();
    assert.ok(!ca.bundle().x509Authorities.some((c) => c.der.equals(first.der)), 'expired CA left the bundle');
  });

  it('caps SVID lifetimes at the signing authority and issues the documented template', async () => {
    const ca = new CertificateAuthority(opts({ x509SvidTtlMs: 365 * 24 * H }));
    await ca.rotate();
    const svid = ca.signX509Svid({ spiffeId: 'spiffe://example.org/db', spki: csrSpki(), dnsNames: ['db.local'] });
    const leaf = svid.chain[0]!;
    const caCert = ca.bundle().x509Authorities.find((c) => leaf.issuer.equals(c.subject))!;
    assert.ok(leaf.notAfter <= caCert.notAfter);
    assert.equal(leaf.notBefore.getTime(), now - 10_000, 'NotBefore backdated 10 s');
    assert.deepEqual(leaf.uris, ['spiffe://example.org/db']);
    assert.deepEqual(leaf.dnsNames, ['db.local']);
    assert.equal(leaf.basicConstraints?.ca, false);
    assert.equal(leaf.keyUsage?.critical, true);
    assert.ok(leaf.extensions.has(OID.extKeyUsage));
    assert.throws(
      () => ca.signX509Svid({ spiffeId: 'spiffe://other.org/db', spki: csrSpki() }),
      (e) => isWritError(e, 'ERR_SPIFFE_ID_INVALID'),
    );
    const jwt = ca.signJwtSvid('spiffe://example.org/db', ['a', 'b']);
    const v = validateJwtSvid(jwt.token, new Map([['example.org', ca.bundle()]]), { audience: 'b', now: new Date(now) });
    assert.equal(v.spiffeId.uri, 'spiffe://example.org/db');
  });

  it('keeps private keys at mode 0600 and encrypts them with a key-encryption key', async () => {
    const kdir = mkdtempSync(join(tmpdir(), 'writ-kek-'));
    const ca = new CertificateAuthority(opts({ dataDir: kdir, serverId: 'kek', kek: 'correct horse battery staple' }));
    await ca.rotate();
    const files = readdirSync(join(kdir, 'keys'));
    assert.equal(files.length, 2);
    for (const f of files) {
      const p = join(kdir, 'keys', f);
      assert.equal(statSync(p).mode & 0o777, 0o600);
      assert.match(readFileSync(p, 'utf8'), /BEGIN ENCRYPTED PRIVATE KEY/);
      assert.throws(
        () => readPrivateKey(p, undefined),
        (e) => isWritError(e, 'ERR_KEY_INVALID') && /encrypted/.test(e.message),
      );
      assert.throws(
        () => readPrivateKey(p, 'hunter2-not-it'),
        (e) => isWritError(e, 'ERR_KEY_INVALID') && !e.message.includes('hunter2'),
      );
    }
    rmSync(kdir, { recursive: true, force: true });
  });

  it('sits under an upstream CA: SVIDs chain through our intermediate to the upstream root', async () => {
    const rootSigner = generateSigner('ec-p384');
    const root = issueCertificate(
      {
        subject: buildName([[OID.commonName, 'Corp Root']]),
        spki: rootSigner.publicKey.export({ format: 'der', type: 'spki' }),
        notBefore: new Date(now - H),
        notAfter: new Date(now + 1000 * H),
        ca: true,
        uris: [],
      },
      { cert: undefined, signer: rootSigner },
    );
    const udir = mkdtempSync(join(tmpdir(), 'writ-up-'));
    const ut = await sqliteTestStore();
    const ca = new CertificateAuthority(opts({ store: ut.store, dataDir: udir, upstream: { chain: [root], signer: rootSigner, roots: [root] } }));
    await ca.rotate();
    assert.deepEqual(
      ca.bundle().x509Authorities.map((c) => c.der),
      [root.der],
    );
    const svid = ca.signX509Svid({ spiffeId: 'spiffe://example.org/web', spki: csrSpki() });
    assert.equal(svid.chain.length, 2);
    const v = verifyX509Svid(svid.chain, new Map([['example.org', ca.bundle()]]), new Date(now));
    assert.equal(v.chain.length, 3);
    assert.equal(parseCertificate(svid.chain[1]!.der).basicConstraints?.ca, true);
    await ut.dispose();
    rmSync(udir, { recursive: true, force: true });
  });
});

describe('certificate authority key types', () => {
  for (const keyType of ['ec-p256', 'ec-p384', 'rsa-2048'] as const) {
    it(`${keyType}: issues X.509-SVIDs and JWT-SVIDs that validate against its bundle`, async () => {
      const t = await sqliteTestStore();
      const dir = mkdtempSync(join(tmpdir(), `writ-${keyType}-`));
      const now = Date.now();
      const ca = new CertificateAuthority({
        store: t.store,
        trustDomain: 'kt.example',
        dataDir: dir,
        serverId: keyType,
        keyType,
        caTtlMs: 24 * H,
        x509SvidTtlMs: H,
        jwtSvidTtlMs: 300_000,
        clock: () => now,
      });
      await ca.rotate();
      const bundles = new Map([['kt.example', ca.bundle()]]);
      const svid = ca.signX509Svid({ spiffeId: 'spiffe://kt.example/w', spki: csrSpki() });
      assert.equal(verifyX509Svid(svid.chain, bundles, new Date(now)).spiffeId.uri, 'spiffe://kt.example/w');
      const jwt = ca.signJwtSvid('spiffe://kt.example/w', ['aud']);
      const header = JSON.parse(Buffer.from(jwt.token.split('.')[0]!, 'base64url').toString());
      assert.equal(header.alg, { 'ec-p256': 'ES256', 'ec-p384': 'ES384', 'rsa-2048': 'RS256' }[keyType]);
      assert.equal(validateJwtSvid(jwt.token, bundles, { audience: 'aud', now: new Date(now) }).spiffeId.uri, 'spiffe://kt.example/w');
      await t.dispose();
      rmSync(dir, { recursive: true, force: true });
    });
  }
});
