import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, sign as cryptoSign, type verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isWritError, type ErrorCode } from './errors.ts';
import { JwtSvidValidator, MAX_JWT_BYTES, signJwtSvid, validateJwtSvid } from './jwt.ts';

const ec256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ec384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ed = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });

const NOW = new Date('2026-06-01T00:00:00Z');
const t = NOW.getTime() / 1000;
const bundles = new Map<string, { jwtAuthorities: Map<string, KeyObject> }>([
  [
    'example.org',
    {
      jwtAuthorities: new Map([
        ['ec', ec256.publicKey],
        ['ec384', ec384.publicKey],
        ['rsa', rsa.publicKey],
        ['ed', ed.publicKey],
      ]),
    },
  ],
  ['other.org', { jwtAuthorities: new Map([['other', other.publicKey]]) }],
]);
const b64 = (o: unknown): string => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');

/** Builds and signs a token with full control of header, claims and algorithm. */
function token(header: Record<string, unknown>, claims: Record<string, unknown>, key: KeyObject | Buffer | null = ec256.privateKey): string {
  const input = `${b64(header)}.${b64(claims)}`;
  const alg = String(header['alg']);
  let sig: Buffer;
  if (key === null || alg === 'none') sig = Buffer.alloc(0);
  else if (Buffer.isBuffer(key)) sig = createHmac('sha256', key).update(input).digest();
  else if (alg === 'EdDSA') sig = cryptoSign(null, Buffer.from(input), key);
  else {
    const digest = `sha${alg.slice(2)}`;
    if (alg.startsWith('ES')) sig = cryptoSign(digest, Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    else if (alg.startsWith('PS')) sig = cryptoSign(digest, Buffer.from(input), { key, padding: 6, saltLength: -1 });
    else sig = cryptoSign(digest, Buffer.from(input), key);
  }
  return `${input}.${sig.toString('base64url')}`;
}

const H = { alg: 'ES256', kid: 'ec', typ: 'JWT' };
const C = { sub: 'spiffe://example.org/web', aud: 'db', exp: t + 300, iat: t };
const AUD = 'db';

function rejects(tok: string, code: ErrorCode, audience = AUD): void {
  assert.throws(
    () => validateJwtSvid(tok, bundles, { audience, now: NOW }),
    (e) => isWritError(e, code),
    `expected ${code}`,
  );
}
/** A validator's refusal: one of the JWT codes (or no bundle for the token's trust domain), never some other error. */
const isJwtRejection = (e: unknown): boolean => isWritError(e) && (e.code.startsWith('ERR_JWT_') || e.code === 'ERR_BUNDLE_NOT_FOUND');
function accepts(tok: string, audience = AUD): void {
  assert.equal(validateJwtSvid(tok, bundles, { audience, now: NOW }).spiffeId.uri, JSON.parse(Buffer.from(tok.split('.')[1]!, 'base64url').toString()).sub);
}

// rule, invalid token, error code, valid counterpart
const CASES: ReadonlyArray<readonly [string, () => string, ErrorCode, () => string]> = [
  ['alg none is refused', () => token({ alg: 'none', kid: 'ec' }, C, null), 'ERR_JWT_ALG_UNSUPPORTED', () => token(H, C)],
  [
    'HS256 is refused even with the public key as secret',
    () => token({ alg: 'HS256', kid: 'ec' }, C, ec256.publicKey.export({ format: 'der', type: 'spki' })),
    'ERR_JWT_ALG_UNSUPPORTED',
    () => token(H, C),
  ],
  [
    'EdDSA is refused even with an Ed25519 key in the bundle',
    () => token({ alg: 'EdDSA', kid: 'ed' }, C, ed.privateKey),
    'ERR_JWT_ALG_UNSUPPORTED',
    () => token({ alg: 'ES384', kid: 'ec384' }, C, ec384.privateKey),
  ],
  [
    'alg must match the key type (RS256 on an EC key)',
    () => token({ alg: 'RS256', kid: 'ec' }, C, rsa.privateKey),
    'ERR_JWT_ALG_UNSUPPORTED',
    () => token({ alg: 'RS256', kid: 'rsa' }, C, rsa.privateKey),
  ],
  [
    'alg must match the curve (ES384 on a P-256 key)',
    () => token({ alg: 'ES384', kid: 'ec' }, C, ec384.privateKey),
    'ERR_JWT_ALG_UNSUPPORTED',
    () => token({ alg: 'PS256', kid: 'rsa' }, C, rsa.privateKey),
  ],
  ['only alg, kid, typ headers (crit)', () => token({ ...H, crit: ['exp'] }, C), 'ERR_JWT_HEADER_INVALID', () => token(H, C)],
  ['only alg, kid, typ headers (jku)', () => token({ ...H, jku: 'https://evil.example/keys' }, C), 'ERR_JWT_HEADER_INVALID', () => token(H, C)],
  ['typ is JWT or JOSE', () => token({ ...H, typ: 'at+jwt' }, C), 'ERR_JWT_HEADER_INVALID', () => token({ ...H, typ: 'JOSE' }, C)],
  ['typ may be absent', () => token({ ...H, typ: 'jwt' }, C), 'ERR_JWT_HEADER_INVALID', () => token({ alg: 'ES256', kid: 'ec' }, C)],
  ['sub is required', () => token(H, { ...C, sub: undefined }), 'ERR_JWT_CLAIM_INVALID', () => token(H, C)],
  ['sub is a SPIFFE ID', () => token(H, { ...C, sub: 'web' }), 'ERR_JWT_CLAIM_INVALID', () => token(H, { ...C, sub: 'spiffe://example.org/web2' })],
  ['sub names a workload, not a trust domain', () => token(H, { ...C, sub: 'spiffe://example.org' }), 'ERR_JWT_CLAIM_INVALID', () => token(H, C)],
  ['aud is required', () => token(H, { ...C, aud: undefined }), 'ERR_JWT_CLAIM_INVALID', () => token(H, C)],
  ['aud may not be empty', () => token(H, { ...C, aud: [] }), 'ERR_JWT_CLAIM_INVALID', () => token(H, { ...C, aud: ['x', 'db'] })],
  ['aud must contain the audience', () => token(H, { ...C, aud: ['x', 'y'] }), 'ERR_JWT_AUDIENCE_MISMATCH', () => token(H, { ...C, aud: ['x', 'db'] })],
  ['exp is required', () => token(H, { ...C, exp: undefined }), 'ERR_JWT_CLAIM_INVALID', () => token(H, C)],
  ['exp is a number', () => token(H, { ...C, exp: String(t + 300) }), 'ERR_JWT_CLAIM_INVALID', () => token(H, C)],
  ['exp in the past beyond leeway', () => token(H, { ...C, exp: t - 31 }), 'ERR_JWT_EXPIRED', () => token(H, { ...C, exp: t - 29 })],
  ['nbf is honoured', () => token(H, { ...C, nbf: t + 31 }), 'ERR_JWT_NOT_YET_VALID', () => token(H, { ...C, nbf: t + 29 })],
  ['kid must name a key', () => token({ ...H, kid: 'nope' }, C), 'ERR_JWT_KEY_NOT_FOUND', () => token(H, C)],
  [
    "key comes from the bundle of sub's trust domain only",
    () => token({ ...H, kid: 'other' }, C, other.privateKey),
    'ERR_JWT_KEY_NOT_FOUND',
    () => token({ ...H, kid: 'other' }, { ...C, sub: 'spiffe://other.org/web' }, other.privateKey),
  ],
  ['a trust domain without a bundle', () => token(H, { ...C, sub: 'spiffe://third.org/web' }), 'ERR_BUNDLE_NOT_FOUND', () => token(H, C)],
  ['signature must verify', () => token(H, C, other.privateKey), 'ERR_JWT_SIGNATURE_INVALID', () => token(H, C)],
  ['compact serialization only (JSON serialization)', () => JSON.stringify({ payload: b64(C), signatures: [] }), 'ERR_JWT_MALFORMED', () => token(H, C)],
  ['exactly three parts', () => `${token(H, C)}.x`, 'ERR_JWT_MALFORMED', () => token(H, C)],
  ['unpadded base64url', () => token(H, C).replace(/\.([^.]+)$/, '.$1=='), 'ERR_JWT_MALFORMED', () => token(H, C)],
  ['header must be a JSON object', () => `${b64('[1]')}.${b64(C)}.AAAA`, 'ERR_JWT_MALFORMED', () => token(H, C)],
  ['size is checked before decoding', () => `${'a'.repeat(MAX_JWT_BYTES)}.b.c`, 'ERR_JWT_TOO_LARGE', () => token(H, { ...C, pad: 'x'.repeat(8000) })],
];

describe('JWT-SVID validation', () => {
  for (const [rule, bad, code, good] of CASES) {
    it(`${rule}`, () => {
      rejects(bad(), code);
      accepts(good());
    });
  }

  it('accepts every algorithm the standard lists that the key supports', () => {
    for (const alg of ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']) accepts(token({ alg, kid: 'rsa' }, C, rsa.privateKey));
    accepts(token({ alg: 'ES384', kid: 'ec384' }, C, ec384.privateKey));
  });

  it('round-trips tokens signed by signJwtSvid for each key type', () => {
    for (const [kid, key, keyType] of [
      ['ec', ec256.privateKey, 'ec-p256'],
      ['ec384', ec384.privateKey, 'ec-p384'],
      ['rsa', rsa.privateKey, 'rsa-2048'],
    ] as const) {
      const tok = signJwtSvid({ ...C, aud: ['db', 'cache'] }, kid, { key, keyType });
      assert.equal(validateJwtSvid(tok, bundles, { audience: 'cache', now: NOW }).kid, kid);
    }
  });

  it('property: arbitrary input is rejected with a WritError, never a crash', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 300 }),
          fc.tuple(fc.base64String(), fc.base64String(), fc.base64String()).map((p) => p.join('.')),
        ),
        (s) => {
          assert.throws(
            () => validateJwtSvid(s, bundles, { audience: AUD, now: NOW }),
            (e) => isJwtRejection(e),
          );
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('property: changing any one character of a valid token makes it invalid', () => {
    const good = token(H, C);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.';
    fc.assert(
      fc.property(fc.nat(good.length - 1), fc.constantFrom(...alphabet), (pos, ch) => {
        fc.pre(good[pos] !== ch);
        const mutated = good.slice(0, pos) + ch + good.slice(pos + 1);
        // A change in the last base64url character can leave the decoded bytes unchanged (unused bits).
        let same = false;
        try {
          same = mutated
            .split('.')
            .every((p, i) => Buffer.from(p, 'base64url').equals(Buffer.from(good.split('.')[i]!, 'base64url')) && (i < 2 ? p === good.split('.')[i] : true));
        } catch {
          /* different shape */
        }
        if (same) return;
        assert.throws(
          () => validateJwtSvid(mutated, bundles, { audience: AUD, now: NOW }),
          (e) => isJwtRejection(e),
        );
      }),
      { numRuns: 3000 },
    );
  });

  it('the caching validator refuses a trust-domain sub as validateJwtSvid does', () => {
    const v = new JwtSvidValidator(bundles, { clock: () => NOW });
    assert.throws(
      () => v.validate(token(H, { ...C, sub: 'spiffe://example.org' }), AUD),
      (e) => isWritError(e, 'ERR_JWT_CLAIM_INVALID') && /path/.test((e as Error).message),
    );
    assert.equal(v.cacheSize, 0);
  });
});

/** Runs `fn` while node:crypto's verify() answers false for every signature, for every importer of it. */
function withVerifyFailing(fn: () => void): void {
  const crypto = createRequire(import.meta.url)('node:crypto') as { verify: typeof cryptoVerify };
  const real = crypto.verify;
  crypto.verify = (() => false) as unknown as typeof cryptoVerify;
  syncBuiltinESMExports();
  try {
    fn();
  } finally {
    crypto.verify = real;
    syncBuiltinESMExports();
  }
}

describe('JWT-SVID validator cache', () => {
  const setup = (max = 100) => {
    const clock = { now: NOW };
    const keys = new Map([['ec', ec256.publicKey]]);
    const v = new JwtSvidValidator(new Map([['example.org', { jwtAuthorities: keys }]]), { clock: () => clock.now, maxCacheEntries: max });
    return { clock, keys, v };
  };

  it('a cache hit skips the signature check: the remembered token passes while verification itself would fail', () => {
    const { v } = setup();
    const tok = token(H, C);
    assert.equal(v.validate(tok, AUD).spiffeId.uri, C.sub);
    withVerifyFailing(() => {
      assert.equal(v.validate(tok, AUD).spiffeId.uri, C.sub, 'a hit is answered from the cache');
      assert.throws(
        () => v.validate(token(H, { ...C, jti: 'fresh' }), AUD),
        (e) => isWritError(e, 'ERR_JWT_SIGNATURE_INVALID'),
        'a miss does verify, and verification is failing now',
      );
    });
  });

  it('a cache hit still enforces audience, expiry and the presence of the key', () => {
    const { clock, keys, v } = setup();
    const tok = token(H, C);
    v.validate(tok, AUD);
    assert.throws(
      () => v.validate(tok, 'other-aud'),
      (e) => isWritError(e, 'ERR_JWT_AUDIENCE_MISMATCH'),
    );
    clock.now = new Date(NOW.getTime() + 400_000);
    assert.throws(
      () => v.validate(tok, AUD),
      (e) => isWritError(e, 'ERR_JWT_EXPIRED'),
    );
    clock.now = NOW;
    keys.delete('ec');
    assert.throws(
      () => v.validate(tok, AUD),
      (e) => isWritError(e, 'ERR_JWT_KEY_NOT_FOUND'),
      'a key removed from the bundle takes effect at once',
    );
  });

  it('a key replaced under the same kid rejects a token cached under the old key', () => {
    const { keys, v } = setup();
    const tok = token(H, C);
    v.validate(tok, AUD);
    keys.set('ec', other.publicKey);
    assert.throws(
      () => v.validate(tok, AUD),
      (e) => isWritError(e, 'ERR_JWT_SIGNATURE_INVALID'),
    );
    assert.equal(v.validate(token(H, C, other.privateKey), AUD).kid, 'ec', 'tokens of the new key pass');
  });

  it('the cache is bounded', () => {
    const { v } = setup(2);
    for (let i = 0; i < 5; i++) v.validate(token(H, { ...C, jti: String(i) }), AUD);
    assert.equal(v.cacheSize, 2);
  });
});

describe('ECDSA signature encodings', () => {
  it('property: DER and JOSE r||s conversions agree with OpenSSL both ways', async () => {
    const { derToJose, joseToDer } = await import('./jwt.ts');
    const { verify } = await import('node:crypto');
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.constantFrom([ec256, 32] as const, [ec384, 48] as const), (msg, [k, n]) => {
        const data = Buffer.from(msg);
        const der = cryptoSign(n === 32 ? 'sha256' : 'sha384', data, k.privateKey);
        const jose = derToJose(der, n);
        assert.equal(jose.length, 2 * n);
        assert.ok(verify(n === 32 ? 'sha256' : 'sha384', data, { key: k.publicKey, dsaEncoding: 'ieee-p1363' }, jose));
        assert.ok(joseToDer(jose, n).equals(der));
      }),
      { numRuns: 300 },
    );
  });
});
