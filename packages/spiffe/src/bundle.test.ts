import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { formatBundleJson, parseBundleJson, parseBundlePem, bundleToPem } from './bundle.ts';
import { isWritError } from './errors.ts';
import { OID, buildName, issueCertificate } from './x509.ts';

const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const now = Date.now();
const ca = issueCertificate(
  {
    subject: buildName([[OID.commonName, 'ca']]),
    spki: k.publicKey.export({ format: 'der', type: 'spki' }),
    notBefore: new Date(now - 1000),
    notAfter: new Date(now + 3_600_000),
    ca: true,
    uris: ['spiffe://example.org'],
  },
  { cert: undefined, signer: { key: k.privateKey, keyType: 'ec-p256' } },
);
const jwtKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
const bundle = { trustDomain: 'example.org', x509Authorities: [ca], jwtAuthorities: new Map([['k1', jwtKey]]), sequence: 7, refreshHint: 300 };

describe('SPIFFE bundle', () => {
  it('round-trips through the JSON form with x509-svid and jwt-svid keys, sequence and refresh hint', () => {
    const json = formatBundleJson(bundle);
    assert.equal(json.spiffe_sequence, 7);
    assert.equal(json.spiffe_refresh_hint, 300);
    const x = json.keys.find((j) => j['use'] === 'x509-svid')!;
    assert.equal((x['x5c'] as string[]).length, 1);
    assert.equal(x['kid'], undefined, 'x509-svid keys have no kid');
    assert.equal(json.keys.find((j) => j['use'] === 'jwt-svid')!['kid'], 'k1');
    const back = parseBundleJson('example.org', JSON.stringify(json));
    assert.ok(back.x509Authorities[0]!.der.equals(ca.der));
    assert.equal(back.jwtAuthorities.size, 1);
    assert.equal(back.sequence, 7);
  });

  it('skips JWKs with an unknown kty or use and keeps the rest', () => {
    const json = formatBundleJson(bundle);
    json.keys.push(
      { kty: 'OKP', crv: 'Ed25519', x: 'AAAA', use: 'jwt-svid', kid: 'ed' },
      { ...json.keys[1]!, use: 'wit-svid', kid: 'w' },
      { ...json.keys[1]!, use: undefined, kid: 'nouse' },
    );
    const back = parseBundleJson('example.org', json);
    assert.deepEqual([...back.jwtAuthorities.keys()], ['k1']);
    assert.equal(back.x509Authorities.length, 1);
  });

  it('ignores x509-svid keys with no x5c, a null or an empty one, and keeps the rest (X509-SVID 6.2)', () => {
    const json = formatBundleJson(bundle);
    const x = json.keys[0]!;
    json.keys.unshift({ ...x, x5c: undefined }, { ...x, x5c: [] }, { ...x, x5c: null });
    const back = parseBundleJson('example.org', JSON.stringify(json));
    assert.deepEqual(
      back.x509Authorities.map((c) => c.der),
      [ca.der],
    );
    assert.deepEqual([...back.jwtAuthorities.keys()], ['k1']);
    const none = parseBundleJson('example.org', { keys: [{ kty: 'EC', use: 'x509-svid' }] });
    assert.equal(none.x509Authorities.length, 0, 'a bundle of only such keys trusts no X.509 authority');
  });

  it('reads only the first of several x5c values, whatever the others hold (X509-SVID 6.2)', () => {
    const other = issueCertificate(
      {
        subject: buildName([[OID.commonName, 'other']]),
        spki: k.publicKey.export({ format: 'der', type: 'spki' }),
        notBefore: new Date(now - 1000),
        notAfter: new Date(now + 3_600_000),
        ca: true,
        uris: ['spiffe://example.org'],
      },
      { cert: undefined, signer: { key: k.privateKey, keyType: 'ec-p256' } },
    );
    const json = formatBundleJson(bundle);
    json.keys[0]!['x5c'] = [ca.der.toString('base64'), other.der.toString('base64'), 'not base64 !', 42, null];
    const back = parseBundleJson('example.org', JSON.stringify(json));
    assert.deepEqual(
      back.x509Authorities.map((c) => c.der),
      [ca.der],
    );
  });

  it('property: x509-svid keys without x5c and extra x5c values mixed in anywhere leave the authorities unchanged', () => {
    const plain = formatBundleJson(bundle);
    const base = parseBundleJson('example.org', plain);
    const skipped = fc.record({
      kty: fc.constantFrom('EC', 'RSA'),
      use: fc.constant('x509-svid'),
      x5c: fc.constantFrom(undefined, null, []),
      crv: fc.constantFrom(undefined, 'P-256'),
    });
    const extra = fc.array(fc.oneof(fc.base64String({ maxLength: 40 }), fc.string({ maxLength: 10 }), fc.integer(), fc.constant(null)), { maxLength: 3 });
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(plain.keys.length), skipped), { maxLength: 5 }), extra, (inserts, tail) => {
        const keys: unknown[] = plain.keys.map((j) => (j['use'] === 'x509-svid' ? { ...j, x5c: [...(j['x5c'] as string[]), ...tail] } : j));
        for (const [at, key] of inserts) keys.splice(at, 0, key);
        const back = parseBundleJson('example.org', JSON.stringify({ ...plain, keys }));
        assert.deepEqual(
          back.x509Authorities.map((c) => c.der),
          base.x509Authorities.map((c) => c.der),
        );
        assert.deepEqual(
          [...back.jwtAuthorities].map(([kid, key]) => [kid, key.export({ format: 'jwk' })]),
          [...base.jwtAuthorities].map(([kid, key]) => [kid, key.export({ format: 'jwk' })]),
        );
        assert.equal(back.sequence, base.sequence);
      }),
      { numRuns: 300 },
    );
  });

  it('an empty keys array is a bundle that trusts nothing', () => {
    const b = parseBundleJson('example.org', '{"keys":[]}');
    assert.equal(b.x509Authorities.length + b.jwtAuthorities.size, 0);
  });

  const bad: Array<[string, unknown]> = [
    ['not JSON', '{keys:'],
    ['keys missing', {}],
    ['keys not an array', { keys: {} }],
    ['x509-svid whose x5c is not an array', { keys: [{ kty: 'EC', use: 'x509-svid', x5c: ca.der.toString('base64') }] }],
    ['x509-svid whose first x5c value is not a string', { keys: [{ kty: 'EC', use: 'x509-svid', x5c: [7, ca.der.toString('base64')] }] }],
    ['x509-svid with a kid', { keys: [{ kty: 'EC', use: 'x509-svid', kid: 'x', x5c: [ca.der.toString('base64')] }] }],
    ['x509-svid with a broken certificate', { keys: [{ kty: 'EC', use: 'x509-svid', x5c: ['AAAA'] }] }],
    ['jwt-svid without kid', { keys: [{ ...formatBundleJson(bundle).keys[1], kid: undefined }] }],
    ['jwt-svid carrying a private key', { keys: [{ ...formatBundleJson(bundle).keys[1], d: 'AAAA' }] }],
    ['negative sequence', { keys: [], spiffe_sequence: -1 }],
  ];
  for (const [what, doc] of bad) {
    it(`rejects ${what}`, () => {
      assert.throws(
        () => parseBundleJson('example.org', typeof doc === 'string' ? doc : JSON.stringify(doc)),
        (e) => isWritError(e, 'ERR_BUNDLE_INVALID'),
      );
    });
  }

  it('PEM form holds the X.509 authorities', () => {
    const pem = bundleToPem(bundle);
    assert.match(pem, /^-----BEGIN CERTIFICATE-----/);
    assert.ok(parseBundlePem('example.org', pem).x509Authorities[0]!.der.equals(ca.der));
    assert.throws(
      () => parseBundlePem('example.org', 'nothing'),
      (e) => isWritError(e, 'ERR_BUNDLE_INVALID'),
    );
  });
});
