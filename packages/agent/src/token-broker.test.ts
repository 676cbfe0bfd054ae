/** The agent's token broker on fakes of the server and the JWT-SVID minting: cache, refusals, input checks. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GRPC_STATUS, GrpcError, type ExchangeRequestMessage } from '@writ/sdk/internal';
import type { EntryView } from './agent.ts';
import { TokenBroker, TokenCache, grpcStatusOf, refreshTime, type CachedToken } from './token-broker.ts';

const TD = 'spiffe://e2e.test';
const WEB = `${TD}/ns/web`;
const API = `${TD}/ns/api`;
const entry = (spiffeId: string): EntryView => ({ id: `id-${spiffeId}`, spiffeId }) as unknown as EntryView;
const req = (r: Partial<ExchangeRequestMessage>): ExchangeRequestMessage => ({
  audience: API,
  scope: ['orders:read'],
  requestedTokenType: '',
  subjectToken: '',
  actorToken: '',
  requestContext: '',
  requestDetails: '',
  spiffeId: '',
  ...r,
});

interface Fake {
  broker: TokenBroker;
  forms: URLSearchParams[];
  now: { t: number };
  answer: { status: number; json: Record<string, unknown> | undefined } | Error;
}

function fake(maxEntries?: number): Fake {
  const f = { forms: [] as URLSearchParams[], now: { t: 1_800_000_000_000 }, answer: ok() } as Fake;
  f.broker = new TokenBroker({
    trustDomain: 'e2e.test',
    clock: () => f.now.t,
    ...(maxEntries ? { maxEntries } : {}),
    jwtSvid: async (e, aud) => ({ token: `svid(${e.spiffeId},${aud.join(',')})` }),
    postForm: async (path, form) => {
      assert.equal(path, '/v1/token');
      const p = new URLSearchParams(form);
      f.forms.push(p);
      if (f.answer instanceof Error) throw f.answer;
      return f.answer;
    },
  });
  return f;
}

function ok(expiresIn = 120, scope = 'orders:read', type = 'urn:ietf:params:oauth:token-type:jwt'): { status: number; json: Record<string, unknown> } {
  return { status: 200, json: { access_token: `tok-${Math.random()}`, issued_token_type: type, token_type: 'Bearer', expires_in: expiresIn, scope } };
}

async function refusal(p: Promise<unknown>): Promise<GrpcError> {
  const err = await p.then(
    () => assert.fail('expected a refusal'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof GrpcError, String(err));
  return err;
}

describe('TokenBroker', () => {
  it('asks the server as the caller: its own JWT-SVID for the trust domain is the client assertion and the subject', async () => {
    const f = fake();
    const r = await f.broker.exchange([entry(WEB)], req({ scope: ['orders:read orders:write', 'orders:read'] }));
    assert.equal(r.cached, false);
    assert.equal(r.tokenType, 'jwt');
    const form = f.forms[0]!;
    assert.equal(form.get('grant_type'), 'urn:ietf:params:oauth:grant-type:token-exchange');
    assert.equal(form.get('client_assertion_type'), 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    assert.equal(form.get('client_assertion'), `svid(${WEB},${TD})`);
    assert.equal(form.get('subject_token'), `svid(${WEB},${TD})`);
    assert.equal(form.get('subject_token_type'), 'urn:ietf:params:oauth:token-type:jwt');
    assert.equal(form.get('audience'), API);
    assert.equal(form.get('scope'), 'orders:read orders:write');
    assert.equal(form.get('requested_token_type'), 'urn:ietf:params:oauth:token-type:jwt');
    assert.equal(r.expiresAt, Math.floor(f.now.t / 1000) + 120);
  });

  it('passes a given subject token (a transaction token by its typ), an actor token and the contexts on', async () => {
    const f = fake();
    f.answer = ok(60, 'orders:read', 'urn:ietf:params:oauth:token-type:txn_token');
    const txn = `${Buffer.from('{"typ":"txntoken+jwt","alg":"ES256"}').toString('base64url')}.e30.sig`;
    const r = await f.broker.exchange(
      [entry(WEB)],
      req({
        audience: TD,
        requestedTokenType: 'txn_token',
        subjectToken: txn,
        actorToken: 'actor',
        requestContext: '{"ip":"10.0.0.1"}',
        requestDetails: '{"op":"buy"}',
      }),
    );
    assert.equal(r.tokenType, 'txn_token');
    const form = f.forms[0]!;
    assert.equal(form.get('subject_token'), txn);
    assert.equal(form.get('subject_token_type'), 'urn:ietf:params:oauth:token-type:txn_token');
    assert.equal(form.get('actor_token'), 'actor');
    assert.equal(form.get('requested_token_type'), 'urn:ietf:params:oauth:token-type:txn_token');
    assert.deepEqual(JSON.parse(Buffer.from(form.get('request_context')!, 'base64url').toString()), { ip: '10.0.0.1' });
    assert.deepEqual(JSON.parse(Buffer.from(form.get('request_details')!, 'base64url').toString()), { op: 'buy' });
  });

  it('answers the same request from its cache until 80% of the life or 30 s before expiry, whichever is first', async () => {
    const f = fake();
    const first = await f.broker.exchange([entry(WEB)], req({ scope: ['orders:read', 'billing:read'] }));
    f.now.t += 89_000;
    // The scope set, not its order or spelling, is the key.
    const again = await f.broker.exchange([entry(WEB)], req({ scope: ['billing:read orders:read'] }));
    assert.equal(again.cached, true);
    assert.equal(again.token, first.token);
    assert.equal(f.forms.length, 1);
    f.now.t += 1_000; // 90 s of 120: 30 s before expiry
    const fresh = await f.broker.exchange([entry(WEB)], req({ scope: ['orders:read', 'billing:read'] }));
    assert.equal(fresh.cached, false);
    assert.equal(f.forms.length, 2);
    assert.equal(refreshTime(0, 600_000), 480_000);
    assert.equal(refreshTime(0, 60_000), 30_000);
    assert.ok(refreshTime(0, 20_000) <= 0, 'a token of less than 30 s is not cached');
  });

  it('keys the cache on the caller, audience, token type and subject token', async () => {
    const f = fake();
    await f.broker.exchange([entry(WEB)], req({}));
    await f.broker.exchange([entry(`${TD}/ns/other`)], req({}));
    await f.broker.exchange([entry(WEB)], req({ audience: `${TD}/ns/billing` }));
    await f.broker.exchange([entry(WEB)], req({ subjectToken: 'a.b.c' }));
    await f.broker.exchange([entry(WEB)], req({ subjectToken: 'a.b.d' }));
    await f.broker.exchange([entry(WEB), entry(`${TD}/ns/second`)], req({ spiffeId: `${TD}/ns/second` }));
    assert.equal(f.forms.length, 6);
    assert.equal(f.forms[5]!.get('client_assertion'), `svid(${TD}/ns/second,${TD})`);
    assert.equal((await f.broker.exchange([entry(WEB)], req({ subjectToken: 'a.b.c' }))).cached, true);
  });

  it('shares one server call between identical requests in flight', async () => {
    const f = fake();
    const [a, b] = await Promise.all([f.broker.exchange([entry(WEB)], req({})), f.broker.exchange([entry(WEB)], req({}))]);
    assert.equal(a.token, b.token);
    assert.equal(f.forms.length, 1);
  });

  it('never caches a refusal, and maps the OAuth error to a gRPC status with the description and code', async () => {
    const f = fake();
    f.answer = {
      status: 400,
      json: {
        error: 'invalid_scope',
        error_description: 'orders:write is not granted',
        code: 'ERR_TOKEN_SCOPE_INVALID',
        message: 'orders:write is not granted',
      },
    };
    const e = await refusal(f.broker.exchange([entry(WEB)], req({ scope: ['orders:write'] })));
    assert.equal(e.code, GRPC_STATUS.INVALID_ARGUMENT);
    assert.equal(e.details, 'invalid_scope: orders:write is not granted [ERR_TOKEN_SCOPE_INVALID]');
    f.answer = ok();
    assert.equal((await f.broker.exchange([entry(WEB)], req({ scope: ['orders:write'] }))).cached, false);
    assert.equal(f.forms.length, 2);

    f.answer = { status: 400, json: { error: 'unauthorized_client', error_description: 'outside hours', code: 'ERR_TOKEN_CLIENT_UNAUTHORIZED' } };
    assert.equal((await refusal(f.broker.exchange([entry(WEB)], req({ audience: `${TD}/x` })))).code, GRPC_STATUS.PERMISSION_DENIED);
    f.answer = { status: 502, json: undefined };
    const away = await refusal(f.broker.exchange([entry(WEB)], req({ audience: `${TD}/y` })));
    assert.equal(away.code, GRPC_STATUS.UNAVAILABLE);
    f.answer = new Error('server https://writ:8443 unreachable: ECONNREFUSED');
    assert.equal((await refusal(f.broker.exchange([entry(WEB)], req({ audience: `${TD}/z` })))).code, GRPC_STATUS.UNAVAILABLE);
    assert.equal(f.broker.stats.cached, 1);
  });

  it('maps every RFC 6749 / RFC 8693 error', () => {
    assert.equal(grpcStatusOf('access_denied'), GRPC_STATUS.PERMISSION_DENIED);
    assert.equal(grpcStatusOf('unauthorized_client'), GRPC_STATUS.PERMISSION_DENIED);
    assert.equal(grpcStatusOf('invalid_client'), GRPC_STATUS.UNAUTHENTICATED);
    for (const e of ['invalid_request', 'invalid_scope', 'invalid_target', 'invalid_grant', 'unsupported_grant_type', 'unsupported_token_type'])
      assert.equal(grpcStatusOf(e), GRPC_STATUS.INVALID_ARGUMENT, e);
    assert.equal(grpcStatusOf('temporarily_unavailable'), GRPC_STATUS.UNAVAILABLE);
    assert.equal(grpcStatusOf('server_error'), GRPC_STATUS.INTERNAL);
  });

  it('refuses a caller without identity, and malformed or oversized requests before asking the server', async () => {
    const f = fake();
    assert.equal((await refusal(f.broker.exchange([], req({})))).code, GRPC_STATUS.PERMISSION_DENIED);
    assert.equal((await refusal(f.broker.exchange([entry(WEB)], req({ spiffeId: `${TD}/ns/not-mine` })))).code, GRPC_STATUS.PERMISSION_DENIED);
    const bad: Array<[Partial<ExchangeRequestMessage>, RegExp]> = [
      [{ audience: '' }, /audience must be specified/],
      [{ audience: 'https://evil.example' }, /audience must be a SPIFFE ID/],
      [{ audience: `${TD}/${'a'.repeat(3000)}` }, /audience is too long/],
      [{ scope: [] }, /scope must be specified/],
      [{ scope: ['  '] }, /scope must be specified/],
      [{ scope: Array.from({ length: 33 }, (_, i) => `s${i}`) }, /at most 32 scopes/],
      [{ scope: ['a'.repeat(129)] }, /not a valid scope/],
      [{ scope: ['orders:"read"'] }, /not a valid scope/],
      [{ requestedTokenType: 'saml2' }, /requested_token_type must be jwt or txn_token/],
      [{ subjectToken: 'x'.repeat(16 * 1024 + 1) }, /subject_token is larger than 16384 bytes/],
      [{ actorToken: 'x'.repeat(16 * 1024 + 1) }, /actor_token is larger/],
      [{ requestContext: '{not json' }, /request_context is not JSON/],
      [{ requestDetails: '[1]' }, /request_details must be a JSON object/],
      [{ requestContext: `{"a":"${'x'.repeat(9000)}"}` }, /request_context is larger/],
    ];
    for (const [r, re] of bad) {
      const e = await refusal(f.broker.exchange([entry(WEB)], req(r)));
      assert.equal(e.code, GRPC_STATUS.INVALID_ARGUMENT, re.source);
      assert.match(e.details, /^invalid_request: .* \[ERR_TOKEN_REQUEST_INVALID\]$/);
      assert.match(e.details, re);
    }
    assert.equal(f.forms.length, 0);
  });

  it('drops the cached tokens of a caller whose identity is gone', async () => {
    const f = fake();
    await f.broker.exchange([entry(WEB)], req({}));
    await f.broker.exchange([entry(API)], req({}));
    assert.equal(f.broker.retain(new Set([API])), 1);
    assert.equal((await f.broker.exchange([entry(WEB)], req({}))).cached, false);
    assert.equal((await f.broker.exchange([entry(API)], req({}))).cached, true);
  });
});

describe('TokenCache', () => {
  const tok = (callerId: string, refreshAt: number): CachedToken => ({
    callerId,
    token: 't',
    expiresAt: refreshAt + 30_000,
    refreshAt,
    scope: [],
    tokenType: 'jwt',
  });

  it('is bounded: the least recently used goes first', () => {
    const c = new TokenCache(2);
    c.set('a', tok(WEB, 100), 0);
    c.set('b', tok(WEB, 100), 0);
    assert.ok(c.get('a', 1)); // a is now the most recent
    c.set('c', tok(WEB, 100), 0);
    assert.equal(c.size, 2);
    assert.equal(c.get('b', 1), undefined);
    assert.ok(c.get('a', 1));
    assert.ok(c.get('c', 1));
  });

  it('does not keep or serve a token past its refresh time', () => {
    const c = new TokenCache();
    c.set('old', tok(WEB, 10), 10);
    assert.equal(c.size, 0);
    c.set('a', tok(WEB, 100), 0);
    assert.equal(c.get('a', 100), undefined);
    assert.equal(c.size, 0);
  });
});
