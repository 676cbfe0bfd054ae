import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import {
  createCsr,
  isWritError,
  parseCertificate,
  parseCsr,
  validateJwtSvid,
  verifyX509Svid,
  OID,
  buildName,
  issueCertificate,
  type Certificate,
} from '@writ/spiffe';
import { sqliteTestStore } from '../testing/stores.ts';
import { CertificateAuthority, type CaOptions } from './ca.ts';
import { generateSigner, readPrivateKey } from './keys.ts';

const H = 3_600_000;

function csrSpki(): Buffer {
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return parseCsr(createCsr({ key: k.privateKey, keyType: 'ec-p256' }, k.publicKey)).spki;
}

/** A CA of its own for one test: its own store, data directory and clock, removed when the test ends. */
async function fixture(t: TestContext, over: Partial<CaOptions> = {}): Promise<{ ca: CertificateAuthority; clock: { now: number }; dir: string }> {
  const store = await sqliteTestStore();
  const dir = mkdtempSync(join(tmpdir(), 'writ-ca-'));
  t.after(async () => {
    await store.dispose();
    rmSync(dir, { recursive: true, force: true });
  });
  const clock = { now: Date.UTC(2026, 0, 1) };
  const ca = new CertificateAuthority({
    store: store.store,
    trustDomain: 'example.org',
    dataDir: dir,
    serverId: 's1',
    keyType: 'ec-p256',
    caTtlMs: 24 * H,
    x509SvidTtlMs: H,
    jwtSvidTtlMs: 5 * 60_000,
    clock: () => clock.now,
    ...over,
  });
  return { ca, clock, dir };
}

/** The key identifier of a certificate's AuthorityKeyIdentifier (SEQUENCE { [0] keyIdentifier }). */
function akiOf(cert: Certificate): Buffer {
  const v = cert.extensions.get(OID.authorityKeyIdentifier)!.value;
  assert.equal(v[0], 0x30);
  assert.equal(v[2], 0x80);
  return v.subarray(4, 4 + v[3]!);
}

const kidOf = (token: string): string => JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()).kid;

describe('certificate authority rotation', () => {
  // Ages count from creation (notBefore is backdated 10 s for skew), so the life is the CA TTL.
  const TTL = 24 * H;
  const LIFE = TTL;

  it('prepares a successor at 1/2 of the life, not earlier, and publishes it before it signs', async (t) => {
    const { ca, clock } = await fixture(t, { caTtlMs: TTL });
    await ca.rotate();
    const start = clock.now; // when the first authorities were created
    const first = ca.bundle().x509Authorities[0]!;
    const firstKid = [...ca.bundle().jwtAuthorities.keys()][0]!;
    clock.now = start + LIFE / 2 - 1;
    await ca.rotate();
    assert.equal(ca.bundle().x509Authorities.length, 1, 'no successor just before half life');
    assert.equal(ca.bundle().jwtAuthorities.size, 1);
    clock.now = start + LIFE / 2;
    await ca.rotate();
    assert.equal(ca.bundle().x509Authorities.length, 2, 'the successor CA is published at half life');
    assert.equal(ca.bundle().jwtAuthorities.size, 2, 'the successor JWT key is published at half life');
    const svid = ca.signX509Svid({ spiffeId: 'spiffe://example.org/web', spki: csrSpki() });
    assert.deepEqual(akiOf(svid.chain[0]!), first.subjectKeyId, 'the predecessor still signs');
    assert.equal(kidOf(ca.signJwtSvid('spiffe://example.org/web', ['db']).token), firstKid);
  });

  it('activates the successor at 5/6 of the life, not earlier: new SVIDs chain to it and carry its key id, old ones still validate', async (t) => {
    const { ca, clock } = await fixture(t, { caTtlMs: TTL });
    await ca.rotate();
    const start = clock.now;
    const first = ca.bundle().x509Authorities[0]!;
    const firstKey = [...ca.bundle().jwtAuthorities][0]!;
    clock.now = start + LIFE / 2;
    await ca.rotate();
    const successor = ca.bundle().x509Authorities.find((c) => !c.der.equals(first.der))!;
    const successorKey = [...ca.bundle().jwtAuthorities].find(([kid]) => kid !== firstKey[0])!;
    const only = (cert: Certificate) => new Map([['example.org', { x509Authorities: [cert] }]]);
    const onlyKey = ([kid, key]: [string, KeyObject]) => new Map([['example.org', { jwtAuthorities: new Map([[kid, key]]) }]]);

    clock.now = start + (LIFE * 5) / 6 - 1;
    await ca.rotate();
    const before = ca.signX509Svid({ spiffeId: 'spiffe://example.org/web', spki: csrSpki() });
    assert.deepEqual(akiOf(before.chain[0]!), first.subjectKeyId, 'just before 5/6 the predecessor signs');
    const beforeJwt = ca.signJwtSvid('spiffe://example.org/web', ['db']).token;
    assert.equal(kidOf(beforeJwt), firstKey[0]);

    clock.now = start + (LIFE * 5) / 6;
    await ca.rotate();
    const at = new Date(clock.now);
    const after = ca.signX509Svid({ spiffeId: 'spiffe://example.org/web', spki: csrSpki() });
    assert.deepEqual(akiOf(after.chain[0]!), successor.subjectKeyId, 'at 5/6 the successor signs');
    assert.equal(verifyX509Svid(after.chain, only(successor), at).chain[1]!.der.toString('hex'), successor.der.toString('hex'));
    assert.throws(
      () => verifyX509Svid(after.chain, only(first), at),
      (e) => isWritError(e, 'ERR_X509_CHAIN_INVALID'),
      'the predecessor did not sign it',
    );
    const afterJwt = ca.signJwtSvid('spiffe://example.org/web', ['db']).token;
    assert.equal(kidOf(afterJwt), successorKey[0]);
    assert.equal(validateJwtSvid(afterJwt, onlyKey(successorKey), { audience: 'db', now: at }).kid, successorKey[0]);
    assert.throws(
      () => validateJwtSvid(afterJwt, onlyKey(firstKey), { audience: 'db', now: at }),
      (e) => isWritError(e, 'ERR_JWT_KEY_NOT_FOUND'),
    );
    // The predecessor stays published: what it signed just before the switch still validates.
    const bundles = new Map([['example.org', ca.bundle()]]);
    verifyX509Svid(before.chain, bundles, at);
    validateJwtSvid(beforeJwt, bundles, { audience: 'db', now: at });
    assert.deepEqual(
      ca
        .authorities()
        .filter((a) => a.kind === 'x509')
        .map((a) => a.status)
        .sort(),
      ['active', 'old'],
    );

    clock.now = first.notAfter.getTime() + 1;
    await ca.rotate();
    // (The successor is past its own half life by now, so its own successor is published beside it.)
    assert.ok(!ca.bundle().x509Authorities.some((c) => c.der.equals(first.der)), 'the expired predecessor left the bundle');
    assert.ok(ca.bundle().x509Authorities.some((c) => c.der.equals(successor.der)));
    assert.ok(!ca.bundle().jwtAuthorities.has(firstKey[0]), 'the expired JWT key left the bundle');
    assert.ok(ca.bundle().jwtAuthorities.has(successorKey[0]));
    const later = ca.signX509Svid({ spiffeId: 'spiffe://example.org/web', spki: csrSpki() });
    assert.deepEqual(akiOf(later.chain[0]!), successor.subjectKeyId, 'the successor signs on after the predecessor is gone');
    verifyX509Svid(later.chain, new Map([['example.org', ca.bundle()]]), new Date(clock.now));
  });

  it('after an outage past 5/6 of the life, publishes the successor first and lets it sign only two refresh hints later', async (t) => {
    const { ca, clock } = await fixture(t, { caTtlMs: TTL });
    await ca.rotate();
    const start = clock.now;
    const first = ca.bundle().x509Authorities[0]!;
    clock.now = start + LIFE * 0.9; // the server was down from before half life until now
    await ca.rotate();
    const successor = ca.bundle().x509Authorities.find((c) => !c.der.equals(first.der));
    assert.ok(successor, 'the successor is published at once');
    const svid = () => akiOf(ca.signX509Svid({ spiffeId: 'spiffe://example.org/web', spki: csrSpki() }).chain[0]!);
    assert.deepEqual(svid(), first.subjectKeyId, 'an unpublished successor does not sign');
    clock.now += 2 * 300_000 - 1; // the refresh hint of a 24 h CA is 300 s
    await ca.rotate();
    assert.deepEqual(svid(), first.subjectKeyId, 'not before peers had two refresh hints to fetch it');
    clock.now += 1;
    await ca.rotate();
    assert.deepEqual(svid(), successor.subjectKeyId, 'two refresh hints after publication it signs');
  });

  it('with a 10 s CA TTL, every authority is published two refresh hints before it signs and one always signs', async (t) => {
    const ttl = 10_000;
    const { ca, clock } = await fixture(t, { caTtlMs: ttl, x509SvidTtlMs: 5_000 });
    await ca.rotate();
    const first = ca.bundle().x509Authorities[0]!;
    assert.equal(ca.bundle().x509Authorities.length, 1, 'a short TTL is not half spent at birth');
    const publishedAt = new Map<string, number>();
    const signers = new Set<string>();
    for (let step = 0; step <= 120; step++) {
      if (step > 0) {
        clock.now += 500;
        await ca.rotate();
      }
      for (const c of ca.bundle().x509Authorities)
        if (!publishedAt.has(c.subjectKeyId!.toString('hex'))) publishedAt.set(c.subjectKeyId!.toString('hex'), clock.now);
      const signer = akiOf(ca.signX509Svid({ spiffeId: 'spiffe://example.org/web', spki: csrSpki() }).chain[0]!).toString('hex');
      signers.add(signer);
      if (signer !== first.subjectKeyId!.toString('hex')) {
        assert.ok(clock.now - publishedAt.get(signer)! >= 2_000, `step ${step}: the signing CA was published two refresh hints (2 s) before it signed`);
      }
    }
    assert.ok(signers.size >= 5, `60 s of a 10 s CA saw ${signers.size} signing authorities`);
  });
});

describe('certificate authority', () => {
  it('caps SVID lifetimes at the signing authority and issues the documented template', async (t) => {
    const { ca, clock } = await fixture(t, { x509SvidTtlMs: 365 * 24 * H });
    await ca.rotate();
    const svid = ca.signX509Svid({ spiffeId: 'spiffe://example.org/db', spki: csrSpki(), dnsNames: ['db.local'] });
    const leaf = svid.chain[0]!;
    const caCert = ca.bundle().x509Authorities[0]!;
    assert.equal(leaf.notAfter.getTime(), caCert.notAfter.getTime(), 'the leaf ends with its CA');
    assert.equal(leaf.notBefore.getTime(), clock.now - 10_000, 'NotBefore backdated 10 s');
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
    const v = validateJwtSvid(jwt.token, new Map([['example.org', ca.bundle()]]), { audience: 'b', now: new Date(clock.now) });
    assert.equal(v.spiffeId.uri, 'spiffe://example.org/db');
  });

  it("caps a JWT-SVID's exp at its signing key's end", async (t) => {
    const { ca, clock } = await fixture(t, { jwtSvidTtlMs: 365 * 24 * H });
    await ca.rotate();
    const keyEnd = ca.authorities().find((a) => a.kind === 'jwt' && a.status === 'active')!.notAfter;
    const long = ca.signJwtSvid('spiffe://example.org/db', ['db']);
    const claims = JSON.parse(Buffer.from(long.token.split('.')[1]!, 'base64url').toString());
    assert.equal(claims.exp, Math.floor(keyEnd / 1000));
    assert.equal(long.expiresAt, keyEnd);
    const short = ca.signJwtSvid('spiffe://example.org/db', ['db'], 60_000);
    assert.equal(short.expiresAt, clock.now + 60_000, 'a shorter TTL is kept as asked');
  });

  it('mints no SVID for the bare trust domain ID or another trust domain', async (t) => {
    const { ca } = await fixture(t);
    await ca.rotate();
    for (const spiffeId of ['spiffe://example.org', 'spiffe://other.org/db']) {
      const refused = (e: unknown) => isWritError(e, 'ERR_SPIFFE_ID_INVALID') && e.field === 'spiffeId';
      assert.throws(() => ca.signX509Svid({ spiffeId, spki: csrSpki() }), refused, spiffeId);
      assert.throws(() => ca.signJwtSvid(spiffeId, ['db']), refused, spiffeId);
    }
  });

  it('keeps private keys at mode 0600 and encrypts them with a key-encryption key', async (t) => {
    const { ca, dir } = await fixture(t, { kek: 'correct horse battery staple' });
    await ca.rotate();
    const files = readdirSync(join(dir, 'keys'));
    assert.equal(files.length, 2);
    for (const f of files) {
      const p = join(dir, 'keys', f);
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
  });

  it('sits under an upstream CA: SVIDs chain through our intermediate to the upstream root', async (t) => {
    const now = Date.UTC(2026, 0, 1);
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
    const { ca, clock } = await fixture(t, { upstream: { chain: [root], signer: rootSigner, roots: [root] } });
    await ca.rotate();
    assert.deepEqual(
      ca.bundle().x509Authorities.map((c) => c.der),
      [root.der],
    );
    const svid = ca.signX509Svid({ spiffeId: 'spiffe://example.org/web', spki: csrSpki() });
    assert.equal(svid.chain.length, 2);
    const v = verifyX509Svid(svid.chain, new Map([['example.org', ca.bundle()]]), new Date(clock.now));
    assert.equal(v.chain.length, 3);
    assert.equal(parseCertificate(svid.chain[1]!.der).basicConstraints?.ca, true);
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
