import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { TokenError } from './errors.ts';
import { GRANT_TYPE_TOKEN_EXCHANGE, REQUEST_LIMITS, TOKEN_TYPE_JWT, TOKEN_TYPE_TXN, parseTokenRequest } from './request.ts';

const form = (p: Record<string, string | string[]>): string =>
  Object.entries(p)
    .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `${encodeURIComponent(k)}=${encodeURIComponent(x)}`))
    .join('&');
const base = {
  grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
  subject_token: 'eyJhbGciOiJFUzI1NiJ9.e30.c2ln',
  subject_token_type: TOKEN_TYPE_JWT,
  audience: 'spiffe://example.org/orders',
  scope: 'orders:read orders:write',
};
const refusal = (body: string): { code: string; error: string; description: string } => {
  try {
    parseTokenRequest(body);
  } catch (err) {
    assert.ok(err instanceof TokenError, String(err));
    const j = err.toJSON();
    return { code: j.code, error: j.error, description: j.error_description };
  }
  assert.fail('accepted');
};

describe('token-exchange requests (RFC 8693 section 2.1)', () => {
  it('reads a request: target, scopes (unique, in order), token types, the JWT type by default', () => {
    const r = parseTokenRequest(form({ ...base, scope: 'orders:read  orders:write orders:read', unknown_param: 'ignored' }));
    assert.equal(r.audience, 'spiffe://example.org/orders');
    assert.deepEqual(r.scopes, ['orders:read', 'orders:write']);
    assert.equal(r.requestedTokenType, TOKEN_TYPE_JWT);
    assert.equal(r.subjectTokenType, TOKEN_TYPE_JWT);
    assert.equal(r.actorToken, undefined);
  });
  it('takes resource for the target and + for spaces', () => {
    const r = parseTokenRequest(
      `${form({ ...base, audience: [] })}&resource=spiffe%3A%2F%2Fexample.org%2Forders&scope=a+b`.replace('&scope=orders%3Aread%20orders%3Awrite', ''),
    );
    assert.equal(r.audience, 'spiffe://example.org/orders');
    assert.deepEqual(r.scopes, ['a', 'b']);
  });
  it('reads a transaction-token request: the trust domain as audience, request_context and request_details', () => {
    const ctx = Buffer.from(JSON.stringify({ req_ip: '10.0.0.1' })).toString('base64url');
    const details = Buffer.from(JSON.stringify({ action: 'BUY', amount: 3 })).toString('base64url');
    const r = parseTokenRequest(
      form({ ...base, audience: 'spiffe://example.org', requested_token_type: TOKEN_TYPE_TXN, request_context: ctx, request_details: details }),
    );
    assert.equal(r.requestedTokenType, TOKEN_TYPE_TXN);
    assert.deepEqual(r.requestContext, { req_ip: '10.0.0.1' });
    assert.deepEqual(r.requestDetails, { action: 'BUY', amount: 3 });
  });

  const cases: Array<[string, string, string, string]> = [
    ['no grant_type', form({ ...base, grant_type: '' }), 'invalid_request', 'grant_type is required'],
    ['another grant', form({ ...base, grant_type: 'client_credentials' }), 'unsupported_grant_type', 'not supported'],
    ['no subject token', form({ ...base, subject_token: '' }), 'invalid_request', 'subject_token is required'],
    ['unknown subject token type', form({ ...base, subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' }), 'invalid_request', 'is not supported'],
    ['actor token without its type', form({ ...base, actor_token: 'x.y.z' }), 'invalid_request', 'actor_token_type is required'],
    ['actor type without a token', form({ ...base, actor_token_type: TOKEN_TYPE_JWT }), 'invalid_request', 'without actor_token'],
    ['no audience', form({ ...base, audience: [] }), 'invalid_target', 'audience (or resource) is required'],
    ['two audiences', form({ ...base, audience: ['spiffe://example.org/a', 'spiffe://example.org/b'] }), 'invalid_target', 'one target per token'],
    ['an audience that is no SPIFFE ID', form({ ...base, audience: 'https://orders.example.org' }), 'invalid_target', 'not a workload SPIFFE ID'],
    ['the trust domain as audience of a JWT', form({ ...base, audience: 'spiffe://example.org' }), 'invalid_target', 'not a workload SPIFFE ID'],
    ['a scope with a quote', form({ ...base, scope: 'a "b' }), 'invalid_scope', 'not a scope token'],
    ['too many scopes', form({ ...base, scope: Array.from({ length: 33 }, (_, i) => `s${i}`).join(' ') }), 'invalid_scope', 'more than 32 scopes'],
    ['a duplicated parameter', `${form(base)}&scope=x`, 'invalid_request', 'given more than once'],
    ['bad percent-encoding', `${form(base)}&x=%zz`, 'invalid_request', 'percent-encoding'],
    ['a NUL', `${form(base)}&x=%00`, 'invalid_request', 'NUL'],
    [
      'an unknown requested type',
      form({ ...base, requested_token_type: 'urn:ietf:params:oauth:token-type:id_token' }),
      'invalid_request',
      'requested_token_type',
    ],
    [
      'a client assertion of another type',
      form({ ...base, client_assertion: 'a.b.c', client_assertion_type: 'urn:x' }),
      'invalid_client',
      'client_assertion_type',
    ],
    ['request_details that is not JSON', form({ ...base, request_details: 'bm90IGpzb24' }), 'invalid_request', 'base64url-encoded JSON object'],
    ['an oversized subject token', form({ ...base, subject_token: 'a'.repeat(REQUEST_LIMITS.tokenBytes + 1) }), 'invalid_request', 'longer than'],
    ['an oversized body', `${form(base)}&pad=${'a'.repeat(REQUEST_LIMITS.bytes)}`, 'invalid_request', 'larger than'],
    ['too many parameters', `${form(base)}${'&x=1'.repeat(40)}`, 'invalid_request', 'more than 32 parameters'],
  ];
  for (const [name, body, error, text] of cases)
    it(`refuses ${name}: ${error}`, () => {
      const r = refusal(body);
      assert.equal(r.error, error);
      assert.match(r.description, new RegExp(text.replace(/[()]/g, '\\$&')));
      assert.match(r.code, /^ERR_TOKEN_/);
    });

  it('never throws anything but a TokenError, whatever the body (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (s) => {
        try {
          parseTokenRequest(s);
        } catch (err) {
          assert.ok(err instanceof TokenError);
        }
      }),
      { numRuns: 500 },
    );
  });
});
