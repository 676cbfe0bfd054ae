import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { validateJwtSvid, type Signer } from '@writ/spiffe';
import { TokenError } from './errors.ts';
import { ACCESS_TOKEN_TYP, TXN_TOKEN_TYP, accessTokenClaims, actClaim, actorsOf, signToken, txnTokenClaims, verifyToken } from './tokens.ts';

const TD = 'example.org';
const ORDERS = `spiffe://${TD}/orders`;
const NOW = Date.parse('2026-12-02T10:30:00Z');
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signer: Signer = { key: privateKey, keyType: 'ec-p256' };
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const bundles = new Map([[TD, { jwtAuthorities: new Map([['k1', publicKey]]) }]]);

const access = (over: Partial<Parameters<typeof accessTokenClaims>[0]> = {}, typ = ACCESS_TOKEN_TYP, s = signer) =>
  signToken(
    accessTokenClaims({
      issuer: 'https://writ.example.org',
      subject: `spiffe://${TD}/users/alice`,
      audience: ORDERS,
      scopes: ['orders:read', 'orders:list'],
      client: `spiffe://${TD}/web`,
      actors: [`spiffe://${TD}/web`, `spiffe://${TD}/gateway`],
      now: NOW,
      ttlMs: 120_000,
      ...over,
    }),
    typ,
    'k1',
    s,
  );
const header = (t: string) => JSON.parse(Buffer.from(t.split('.')[0]!, 'base64url').toString());
const claims = (t: string) => JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString());
const verify = (t: string, o: Partial<Parameters<typeof verifyToken>[1]> = {}) =>
  verifyToken(t, { bundles, trustDomain: TD, audience: ORDERS, now: NOW + 1000, ...o });
const refused = (fn: () => unknown): TokenError => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TokenError, String(err));
    return err;
  }
  assert.fail('accepted');
};

describe('issued tokens', () => {
  it('an access token: at+jwt, sub the subject, aud the target, nested act with the current actor outermost (RFC 8693 4.1)', () => {
    const t = access();
    assert.deepEqual(header(t), { alg: 'ES256', kid: 'k1', typ: 'at+jwt' });
    const c = claims(t);
    assert.equal(c.sub, `spiffe://${TD}/users/alice`);
    assert.equal(c.aud, ORDERS);
    assert.equal(c.scope, 'orders:read orders:list');
    assert.deepEqual(c.act, { sub: `spiffe://${TD}/web`, act: { sub: `spiffe://${TD}/gateway` } });
    assert.equal(c.exp - c.iat, 120);
    assert.match(c.jti, /^[0-9a-f-]{36}$/);
    assert.match(c.txn, /^[0-9a-f-]{36}$/);
  });
  it('is never taken for a JWT-SVID (its typ is refused by JWT-SVID validation)', () => {
    assert.throws(() => validateJwtSvid(access(), bundles, { audience: ORDERS, now: new Date(NOW) }), /typ must be JWT or JOSE/);
  });
  it('a transaction token (draft-ietf-oauth-transaction-tokens-08): txntoken+jwt, aud the trust domain, req_wl, tctx, rctx', () => {
    const t = signToken(
      txnTokenClaims({
        issuer: 'https://writ.example.org',
        trustDomain: TD,
        subject: `spiffe://${TD}/users/alice`,
        scopes: ['trade'],
        requestingWorkloads: [`spiffe://${TD}/gateway`],
        tctx: { action: 'BUY' },
        rctx: { req_ip: '10.1.2.3' },
        now: NOW,
        ttlMs: 60_000,
      }),
      TXN_TOKEN_TYP,
      'k1',
      signer,
    );
    assert.equal(header(t).typ, 'txntoken+jwt');
    const c = claims(t);
    assert.equal(c.aud, `spiffe://${TD}`);
    assert.equal(c.req_wl, `spiffe://${TD}/gateway`);
    assert.deepEqual(c.tctx, { action: 'BUY' });
    assert.deepEqual(c.rctx, { req_ip: '10.1.2.3' });
    assert.equal(c.scope, 'trade');
    const v = verify(t, { audience: `spiffe://${TD}/anyone` });
    assert.equal(v.type, 'txn-token');
    assert.deepEqual(v.requestingWorkloads, [`spiffe://${TD}/gateway`]);
  });
  it('act claims round-trip, and a chain that loops or is too deep is refused', () => {
    assert.deepEqual(actorsOf(actClaim(['a', 'b'].map((x) => `spiffe://${TD}/${x}`))), [`spiffe://${TD}/a`, `spiffe://${TD}/b`]);
    assert.match(refused(() => actorsOf({ sub: `spiffe://${TD}/a`, act: { sub: `spiffe://${TD}/a` } })).message, /loops/);
    const deep = actClaim([1, 2, 3, 4, 5, 6].map((i) => `spiffe://${TD}/${i}`));
    assert.equal(refused(() => actorsOf(deep)).code, 'ERR_TOKEN_DEPTH_EXCEEDED');
  });
});

describe('verifying a Writ token (the receiving side)', () => {
  it('accepts one for this audience and gives subject, scopes, actors', () => {
    const v = verify(access(), { scopes: ['orders:read'] });
    assert.equal(v.subject, `spiffe://${TD}/users/alice`);
    assert.deepEqual(v.scopes, ['orders:read', 'orders:list']);
    assert.deepEqual(v.actors, [`spiffe://${TD}/web`, `spiffe://${TD}/gateway`]);
  });
  const cases: Array<[string, () => unknown, string, RegExp]> = [
    ['another audience', () => verify(access(), { audience: `spiffe://${TD}/billing` }), 'ERR_TOKEN_INVALID', /is for spiffe:\/\/example.org\/orders, not/],
    ['expired (past the 5 s skew)', () => verify(access(), { now: NOW + 126_000 }), 'ERR_TOKEN_INVALID', /expired at/],
    ['not yet valid', () => verify(access(), { now: NOW - 60_000 }), 'ERR_TOKEN_INVALID', /not valid yet/],
    ['a scope it does not cover', () => verify(access(), { scopes: ['orders:write'] }), 'ERR_TOKEN_SCOPE_INSUFFICIENT', /does not cover orders:write/],
    ['too deep for the receiver', () => verify(access(), { maxDepth: 1 }), 'ERR_TOKEN_DEPTH_EXCEEDED', /2 actors deep; at most 1/],
    ['signed by another key', () => verify(access({}, ACCESS_TOKEN_TYP, { key: other.privateKey, keyType: 'ec-p256' })), 'ERR_TOKEN_INVALID', /signature/],
    ['a JWT-SVID (typ JWT)', () => verify(access({}, 'JWT')), 'ERR_TOKEN_INVALID', /not a Writ-issued token/],
    ['another issuer', () => verify(access(), { issuer: 'https://elsewhere' }), 'ERR_TOKEN_INVALID', /iss/],
    ['garbage', () => verify('not a token'), 'ERR_TOKEN_INVALID', /not a JWS/],
    ['a type the receiver does not take', () => verify(access(), { types: ['txn-token'] }), 'ERR_TOKEN_INVALID', /not accepted here/],
  ];
  for (const [name, fn, code, msg] of cases)
    it(`refuses ${name}: ${code}`, () => {
      const e = refused(fn);
      assert.equal(e.code, code);
      assert.equal(e.error, code === 'ERR_TOKEN_SCOPE_INSUFFICIENT' ? 'insufficient_scope' : 'invalid_token');
      assert.match(e.message, msg);
    });
});
