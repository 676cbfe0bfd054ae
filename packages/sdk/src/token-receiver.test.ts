/**
 * The receiving side in the SDK: `readToken` + the enforcement core's refusals against a policy
 * with token conditions, and `requireToken` in front of a real node:http server.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { createServer, request, type Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { accessTokenClaims, signToken, txnTokenClaims } from '@writ/broker';
import { PolicyEngine, parseAction, parsePolicies } from '@writ/policy';
import { JwtSvidValidator, signJwtSvid } from '@writ/spiffe';
import type { DecisionLogEntry } from './enforce.ts';
import { enforce, grpcRefusal, httpRefusal, readToken } from './enforce.ts';
import { requireToken, writMiddleware, type LocalPolicy, type WritRequestInfo } from './authz.ts';
import type { JwtSource } from './sources.ts';

const TD = 't.test';
const ORDERS = `spiffe://${TD}/ns/shop/orders`;
const WEB = `spiffe://${TD}/ns/shop/web`;
const ALICE = `spiffe://${TD}/users/alice`;
const KID = 'k1';
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const bundles = new Map([[TD, { jwtAuthorities: new Map([[KID, publicKey]]) }]]);
const signer = { key: privateKey, keyType: 'ec-p256' as const };

function access(o: { audience?: string; scopes?: string[]; actors?: string[]; ttlMs?: number; now?: number; key?: typeof signer } = {}): string {
  const claims = accessTokenClaims({
    issuer: 'https://writ.t.test',
    subject: ALICE,
    audience: o.audience ?? ORDERS,
    scopes: o.scopes ?? ['orders:read'],
    client: WEB,
    actors: o.actors ?? [WEB],
    now: o.now ?? Date.now(),
    ttlMs: o.ttlMs ?? 120_000,
  });
  return signToken(claims, 'at+jwt', KID, o.key ?? signer);
}
const txn = (scopes = ['orders:read']): string =>
  signToken(
    txnTokenClaims({ issuer: 'https://writ.t.test', trustDomain: TD, subject: ALICE, scopes, requestingWorkloads: [WEB], now: Date.now(), ttlMs: 60_000 }),
    'txntoken+jwt',
    KID,
    signer,
  );

const POLICY = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: ${ORDERS}
  rules:
    - effect: allow
      from: [spiffe://${TD}/ns/shop/*]
      actions: [{ methods: [GET], paths: ["/v1/orders/*"] }]
      when: [{ token: { scope: orders:read, maxDepth: 1 } }]
`;

describe('readToken and the refusals of the enforcement core', () => {
  const engine = new PolicyEngine(parsePolicies(POLICY).policies, { revision: 1 });
  const verifier = { bundles, trustDomain: TD, audience: ORDERS };
  const decide = (fields: { authorization?: string; txnToken?: string }) => {
    const read = readToken(fields, verifier);
    const logged: DecisionLogEntry[] = [];
    const e = enforce(
      { decide: (r) => engine.decide(r), log: (l) => logged.push(l) },
      { from: WEB, to: ORDERS, action: parseAction('GET /v1/orders/1'), ...(read.token ? { token: read.token } : {}) },
    );
    return { e, refusal: httpRefusal(e, read), logged };
  };

  it('a valid access token or transaction token with the scope is allowed', () => {
    assert.equal(decide({ authorization: `Bearer ${access()}` }).refusal, undefined);
    assert.equal(decide({ txnToken: txn() }).refusal, undefined);
  });

  const cases: Array<[string, { authorization?: string; txnToken?: string }, number, string, RegExp, RegExp]> = [
    ['no token', {}, 401, 'ERR_TOKEN_REQUIRED', /scope orders:read is required/, /^Bearer$/],
    [
      'another audience',
      { authorization: `Bearer ${access({ audience: `spiffe://${TD}/ns/shop/billing` })}` },
      401,
      'ERR_TOKEN_INVALID',
      /is for spiffe:\/\/t\.test\/ns\/shop\/billing/,
      /error="invalid_token"/,
    ],
    [
      'expired',
      { authorization: `Bearer ${access({ now: Date.now() - 600_000, ttlMs: 60_000 })}` },
      401,
      'ERR_TOKEN_INVALID',
      /expired at/,
      /error="invalid_token"/,
    ],
    [
      'signed by another key',
      { authorization: `Bearer ${access({ key: { key: other.privateKey, keyType: 'ec-p256' } })}` },
      401,
      'ERR_TOKEN_INVALID',
      /token rejected/,
      /invalid_token/,
    ],
    ['garbage', { authorization: 'Bearer not-a-token' }, 401, 'ERR_TOKEN_INVALID', /not a JWS/, /invalid_token/],
    ['oversized', { authorization: `Bearer ey${'A'.repeat(20_000)}` }, 401, 'ERR_TOKEN_INVALID', /larger than 16384 bytes/, /invalid_token/],
    [
      'insufficient scope',
      { authorization: `Bearer ${access({ scopes: ['orders:list'] })}` },
      403,
      'ERR_TOKEN_SCOPE_INSUFFICIENT',
      /does not cover orders:read/,
      /error="insufficient_scope"/,
    ],
    [
      'too deep for the rule',
      { authorization: `Bearer ${access({ actors: [WEB, `spiffe://${TD}/ns/shop/edge`] })}` },
      403,
      'ERR_TOKEN_DEPTH_EXCEEDED',
      /2 actors deep/,
      /invalid_token/,
    ],
  ];
  for (const [what, fields, status, code, reason, challenge] of cases)
    it(`${what}: ${status} ${code} with the reason, never the token`, () => {
      const { e, refusal, logged } = decide(fields);
      assert.equal(refusal?.status, status);
      assert.equal(refusal?.body.code, code);
      assert.equal(refusal?.body.decisionId, e.decisionId);
      assert.match(refusal!.body.reason!, reason);
      assert.match(refusal!.headers!['www-authenticate']!, challenge);
      const token = (fields.authorization ?? '').slice(7);
      if (token) assert.ok(!JSON.stringify(refusal).includes(token.slice(0, 40)) && !JSON.stringify(logged).includes(token.slice(0, 40)));
    });

  it('a gRPC call gets the same refusal as a status: UNAUTHENTICATED for a 401, PERMISSION_DENIED for a 403', () => {
    const none = decide({});
    assert.deepEqual(grpcRefusal(none.e, {})?.status, 16);
    assert.match(grpcRefusal(none.e, {})!.message, /^ERR_TOKEN_REQUIRED: a Writ token with scope orders:read is required \(decision /);
    const narrowRead = readToken({ authorization: `Bearer ${access({ scopes: ['x'] })}` }, verifier);
    const narrow = enforce({ decide: (r) => engine.decide(r) }, { from: WEB, to: ORDERS, action: parseAction('GET /v1/orders/1'), token: narrowRead.token! });
    assert.equal(grpcRefusal(narrow, narrowRead)?.status, 7);
  });

  it('a transaction token in Authorization passes; an access token in Txn-Token does not', () => {
    assert.ok(readToken({ authorization: `Bearer ${txn()}` }, verifier).token);
    assert.match(readToken({ txnToken: access() }, verifier).error!.message, /a access-token is not accepted here/);
  });

  it('the log line of a refusal names the token subject and scope, not the token', () => {
    const t = access({ scopes: ['orders:list'] });
    const { logged } = decide({ authorization: `Bearer ${t}` });
    assert.deepEqual(logged[0]?.token, { subject: ALICE, scopes: 'orders:list', type: 'access-token' });
    assert.ok(!JSON.stringify(logged).includes(t.slice(0, 40)));
  });
});

describe('requireToken in front of a node:http server', () => {
  let server: Server;
  let port: number;
  before(async () => {
    const guard = requireToken({ scope: 'orders:read', source: { bundles }, audience: ORDERS });
    server = createServer((req, res) =>
      guard(req, res, () => {
        const t = (req as typeof req & { writToken?: { subject: string; scopes: readonly string[] } }).writToken;
        res.end(JSON.stringify({ subject: t?.subject, scopes: t?.scopes }));
      }),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  after(() => server.close());

  const get = (headers: Record<string, string>): Promise<{ status: number; body: Record<string, unknown>; challenge: string | undefined }> =>
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/v1/orders/1', headers }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text), challenge: res.headers['www-authenticate'] }));
      });
      req.on('error', reject);
      req.end();
    });

  it('passes a token with the scope, and the handler sees whom it is for', async () => {
    const r = await get({ authorization: `Bearer ${access({ scopes: ['orders:read', 'orders:list'] })}` });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { subject: ALICE, scopes: ['orders:read', 'orders:list'] });
    assert.equal((await get({ 'txn-token': txn() })).status, 200);
  });

  it('refuses a missing, bad, or narrow token the way the proxy does', async () => {
    const none = await get({});
    assert.deepEqual([none.status, none.body.code, none.challenge], [401, 'ERR_TOKEN_REQUIRED', 'Bearer']);
    assert.match(String(none.body.decisionId), /^[0-9a-f-]{36}$/);
    const expired = await get({ authorization: `Bearer ${access({ now: Date.now() - 600_000, ttlMs: 60_000 })}` });
    assert.deepEqual([expired.status, expired.body.code], [401, 'ERR_TOKEN_INVALID']);
    assert.match(String(expired.body.reason), /expired/);
    const narrow = await get({ authorization: `Bearer ${access({ scopes: ['orders:list'] })}` });
    assert.deepEqual([narrow.status, narrow.body.code], [403, 'ERR_TOKEN_SCOPE_INSUFFICIENT']);
    assert.match(String(narrow.challenge), /error="insufficient_scope"/);
  });

  it('supports Fastify-style (request.raw, reply.raw, hijack)', () => {
    const guard = requireToken({ scope: 'orders:read', source: { bundles }, audience: ORDERS });
    const token = access();
    const raw = { headers: { authorization: `Bearer ${token}` } } as unknown as Parameters<typeof guard>[0] & { headers: object };
    const request_ = { raw } as { raw: typeof raw; writToken?: { subject: string } };
    let nexted = false;
    guard(request_ as never, { raw: {} as never, hijack: () => assert.fail('hijacked') }, () => (nexted = true));
    assert.ok(nexted);
    assert.equal(request_.writToken?.subject, ALICE);
  });
});

describe('writMiddleware with tokens: the policy decides token conditions', () => {
  let server: Server;
  let port: number;
  const engine = new PolicyEngine(parsePolicies(POLICY).policies, { revision: 1 });
  before(async () => {
    // The middleware asks its policy only to decide: an engine on the same policy stands in for the agent's.
    const policy = { decide: (r: Parameters<PolicyEngine['decide']>[0]) => engine.decide(r) } as unknown as LocalPolicy;
    // The caller is a JWT-SVID in Authorization (plain HTTP, no mTLS); the Writ token a transaction token in Txn-Token.
    const validator = new JwtSvidValidator(bundles);
    const jwt = { source: { validate: (t: string, aud: string) => validator.validate(t, aud) } as unknown as JwtSource, audience: ORDERS };
    const mw = writMiddleware({ policy, to: ORDERS, jwt, tokens: { source: { bundles } } });
    server = createServer((req, res) =>
      mw(req, res, () => res.end(JSON.stringify({ subject: (req as typeof req & { writ: WritRequestInfo }).writ.token?.subject }))),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  after(() => server.close());
  const get = (headers: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> =>
    new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/v1/orders/1', headers }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
      });
      req.on('error', reject);
      req.end();
    });
  it('allows with the token and gives the handler its subject; refuses without, with the reason', async () => {
    const svid = signJwtSvid({ sub: WEB, aud: ORDERS, exp: Math.floor(Date.now() / 1000) + 300 }, KID, signer);
    const caller = { authorization: `Bearer ${svid}` };
    const ok = await get({ ...caller, 'txn-token': txn() });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.deepEqual(ok.body, { subject: ALICE });
    const none = await get(caller);
    assert.deepEqual([none.status, none.body['code']], [401, 'ERR_TOKEN_REQUIRED']);
    const narrow = await get({ ...caller, 'txn-token': txn(['orders:list']) });
    assert.deepEqual([narrow.status, narrow.body['code']], [403, 'ERR_TOKEN_SCOPE_INSUFFICIENT']);
    assert.deepEqual((await get({ 'txn-token': txn() })).body['code'], 'UNAUTHENTICATED', 'a token is no caller identity');
  });
});
