import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
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

  it('an empty keys array is a bundle that trusts nothing', () => {
    const b = parseBundleJson('example.org', '{"keys":[]}');
    assert.equal(b.x509Authorities.length + b.jwtAuthorities.size, 0);
  });

  const bad: Array<[string, unknown]> = [
    ['not JSON', '{keys:'],
    ['keys missing', {}],
    ['keys not an array', { keys: {} }],
    ['x509-svid with two certificates', { keys: [{ kty: 'EC', use: 'x509-svid', x5c: [ca.der.toString('base64'), ca.der.toString('base64')] }] }],
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
