/**
 * Token exchange (RFC 8693) against a real `writ server` process: clients authenticate with an
 * X.509-SVID over mTLS or a JWT-SVID client assertion, TokenPolicies applied with `writ policy
 * apply` decide, PyJWT verifies the issued tokens from the discovery URL alone, and every grant
 * and refusal is in the decision log.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEBIAN_PYTHON, ROOT, applyPolicy, cleanup, run, startServerProcess, writ, type ServerProcess } from './helpers.ts';

const TD = 'spiffe://e2e.test';
const WEB = `${TD}/ns/shop/web`;
const ORDERS = `${TD}/ns/shop/orders`;
const BILLING = `${TD}/ns/shop/billing`;
const STOCK = `${TD}/ns/shop/stock`;
const ALICE = `${TD}/users/alice`;
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const TXN = 'urn:ietf:params:oauth:token-type:txn_token';

const POLICY = `apiVersion: writ.dev/v1
kind: TokenPolicy
metadata: { name: shop }
spec:
  clients: ["${TD}/ns/shop/*"]
  subjects: ["${TD}/users/*", "${TD}/ns/shop/*"]
  audiences: ["${TD}/ns/shop/*", "${TD}"]
  scopes: ["orders:*"]
  requestedTokenTypes: [jwt, txn_token]
  maxDepth: 2
  maxTtl: 2m
`;

let srv: ServerProcess;
let certs: Record<string, { cert: Buffer; key: Buffer }>;

interface Res {
  status: number;
  body: Record<string, unknown>;
  headers: Record<string, string | string[] | undefined>;
}

function call(method: string, path: string, opts: { body?: string; type?: string; as?: string; admin?: boolean } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const tls = opts.as ? certs[opts.as]! : undefined;
    const req = request(
      `${srv.url}${path}`,
      {
        method,
        ca: readFileSync(join(srv.dataDir, 'bundle.pem')),
        ...(tls ? { cert: tls.cert, key: tls.key } : {}),
        headers: {
          ...(opts.admin ? { authorization: `Bearer ${srv.adminToken}` } : {}),
          ...(opts.body !== undefined ? { 'content-type': opts.type ?? 'application/x-www-form-urlencoded' } : {}),
        },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          let body: Record<string, unknown> = {};
          try {
            body = JSON.parse(text);
          } catch {
            body = { text };
          }
          resolve({ status: res.statusCode!, body, headers: res.headers });
        });
      },
    );
    req.on('error', reject);
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

const form = (p: Record<string, string | undefined>): string =>
  Object.entries(p)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${encodeURIComponent(v!)}`)
    .join('&');

async function jwtSvid(spiffeId: string, audience: string): Promise<string> {
  const r = await call('POST', '/v1/svids/jwt', { body: JSON.stringify({ spiffeId, audience: [audience] }), type: 'application/json', admin: true });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body['token'] as string;
}

const exchange = (p: Record<string, string | undefined>, as?: string) =>
  call('POST', '/v1/token', {
    body: form({ grant_type: EXCHANGE, subject_token_type: JWT, ...p }),
    ...(as ? { as } : {}),
  });

const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
const headerOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as Record<string, unknown>;

async function pyjwt(token: string, audience: string): Promise<string> {
  const r = await run(DEBIAN_PYTHON, [join(ROOT, 'test/python/verify_token.py'), `${srv.url}/.well-known/openid-configuration`, token, audience], {
    env: { SSL_CERT_FILE: join(srv.dataDir, 'bundle.pem') },
  });
  assert.equal(r.stderr, '');
  return r.stdout.trim();
}

before(async () => {
  srv = await startServerProcess();
  certs = {};
  for (const id of [WEB, ORDERS, BILLING]) {
    const dir = join(srv.dataDir, `svid-${id.split('/').pop()}`);
    const m = await writ(srv, ['svid', 'mint-x509', '--spiffe-id', id, '--out', dir]);
    assert.equal(m.code, 0, m.stderr);
    certs[id] = { cert: readFileSync(join(dir, 'svid.pem')), key: readFileSync(join(dir, 'svid.key')) };
  }
  await applyPolicy(srv, srv.dataDir, POLICY);
});
after(async () => {
  await srv.stop();
  cleanup(srv.dataDir);
});

describe('POST /v1/token', () => {
  it('over mTLS: a JWT-SVID sent to web becomes a token for orders, on behalf of its subject, that PyJWT verifies from the discovery URL', async () => {
    const r = await exchange({ subject_token: await jwtSvid(ALICE, WEB), audience: ORDERS, scope: 'orders:read' }, WEB);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body['issued_token_type'], JWT);
    assert.equal(r.body['token_type'], 'Bearer');
    assert.equal(r.body['scope'], 'orders:read');
    assert.ok((r.body['expires_in'] as number) > 100 && (r.body['expires_in'] as number) <= 120, 'maxTtl 2m');
    assert.equal(r.headers['cache-control'], 'no-store');
    const token = r.body['access_token'] as string;
    const out = await pyjwt(token, ORDERS);
    assert.match(out, /^OK /);
    const { header, claims } = JSON.parse(out.slice(3));
    assert.equal(header.typ, 'at+jwt');
    assert.equal(claims.sub, ALICE);
    assert.equal(claims.aud, ORDERS);
    assert.deepEqual(claims.act, { sub: WEB });
    assert.equal(claims.client_id, WEB);
    assert.ok(claims.jti && claims.txn);
    assert.equal(await pyjwt(token, BILLING), 'REJECTED InvalidAudienceError');
  });

  it('with a JWT-SVID client assertion (audience: the trust domain), without a client certificate', async () => {
    const r = await exchange({
      subject_token: await jwtSvid(ALICE, WEB),
      audience: ORDERS,
      scope: 'orders:read',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await jwtSvid(WEB, TD),
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(claimsOf(r.body['access_token'] as string)['act'], { sub: WEB });
  });

  it('a chain: each hop nests the act claim (outermost the current actor), scopes only narrow, the depth limit holds, loops are refused', async () => {
    const first = await exchange({ subject_token: await jwtSvid(ALICE, WEB), audience: ORDERS, scope: 'orders:read orders:list' }, WEB);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const atOrders = first.body['access_token'] as string;
    const second = await exchange({ subject_token: atOrders, audience: BILLING, scope: 'orders:read' }, ORDERS);
    assert.equal(second.status, 200, JSON.stringify(second.body));
    const c = claimsOf(second.body['access_token'] as string);
    assert.equal(c['sub'], ALICE);
    assert.deepEqual(c['act'], { sub: ORDERS, act: { sub: WEB } });
    assert.equal(c['txn'], claimsOf(atOrders)['txn'], 'one transaction along the chain');
    assert.match(await pyjwt(second.body['access_token'] as string, BILLING), /^OK /);

    const wider = await exchange({ subject_token: atOrders, audience: BILLING, scope: 'orders:read orders:write' }, ORDERS);
    assert.equal(wider.status, 400);
    assert.equal(wider.body['error'], 'invalid_scope');
    assert.match(wider.body['error_description'] as string, /scopes only narrow along a chain: orders:write/);

    const deeper = await exchange({ subject_token: second.body['access_token'] as string, audience: STOCK, scope: 'orders:read' }, BILLING);
    assert.equal(deeper.status, 400);
    assert.equal(deeper.body['error'], 'invalid_grant');
    assert.match(deeper.body['error_description'] as string, /3 actors deep; TokenPolicy shop allows 2/);

    const back = await exchange({ subject_token: atOrders, audience: WEB, scope: 'orders:read' }, ORDERS);
    assert.equal(back.status, 200, JSON.stringify(back.body));
    const loop = await exchange({ subject_token: back.body['access_token'] as string, audience: BILLING, scope: 'orders:read' }, WEB);
    assert.equal(loop.status, 400);
    assert.equal(loop.body['error'], 'invalid_grant');
    assert.match(loop.body['error_description'] as string, /act chain loops/);
  });

  it('a transaction token: txntoken+jwt, aud the trust domain, req_wl the client, tctx as requested', async () => {
    const details = Buffer.from(JSON.stringify({ order: 42 })).toString('base64url');
    const r = await exchange(
      { subject_token: await jwtSvid(ALICE, WEB), audience: TD, scope: 'orders:read', requested_token_type: TXN, request_details: details },
      WEB,
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body['issued_token_type'], TXN);
    assert.equal(r.body['token_type'], 'N_A');
    const t = r.body['access_token'] as string;
    assert.equal(headerOf(t)['typ'], 'txntoken+jwt');
    const out = await pyjwt(t, TD);
    assert.match(out, /^OK /);
    const { claims } = JSON.parse(out.slice(3));
    assert.equal(claims.sub, ALICE);
    assert.equal(claims.req_wl, WEB);
    assert.deepEqual(claims.tctx, { order: 42 });
    assert.ok(claims.txn);
    // A replacement keeps sub, txn and tctx and appends the new requester.
    const again = await exchange({ subject_token: t, subject_token_type: TXN, audience: TD, scope: 'orders:read', requested_token_type: TXN }, ORDERS);
    assert.equal(again.status, 200, JSON.stringify(again.body));
    const c = claimsOf(again.body['access_token'] as string);
    assert.deepEqual(c['req_wl'], [WEB, ORDERS]);
    assert.equal(c['txn'], claims.txn);
    assert.deepEqual(c['tctx'], { order: 42 });
  });

  describe('bad input: the RFC 6749 error with a reason and the Writ code, never a token', () => {
    it('no client authentication: 401 invalid_client with WWW-Authenticate', async () => {
      const r = await exchange({ subject_token: await jwtSvid(ALICE, WEB), audience: ORDERS, scope: 'orders:read' });
      assert.equal(r.status, 401);
      assert.equal(r.body['error'], 'invalid_client');
      assert.equal(r.body['code'], 'ERR_TOKEN_CLIENT_INVALID');
      assert.ok(r.headers['www-authenticate']);
    });
    it('a client assertion for another audience: invalid_client', async () => {
      const r = await exchange({
        subject_token: await jwtSvid(ALICE, WEB),
        audience: ORDERS,
        scope: 'orders:read',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await jwtSvid(WEB, ORDERS),
      });
      assert.equal(r.status, 401);
      assert.equal(r.body['error'], 'invalid_client');
    });
    const cases: Array<[string, () => Promise<Res>, number, string, RegExp]> = [
      [
        'an unknown grant type',
        async () => call('POST', '/v1/token', { body: 'grant_type=password&username=a', as: WEB }),
        400,
        'unsupported_grant_type',
        /password/,
      ],
      [
        'an unknown subject token type',
        async () => exchange({ subject_token: 'x', subject_token_type: 'urn:ietf:params:oauth:token-type:saml2', audience: ORDERS }, WEB),
        400,
        'invalid_request',
        /subject_token_type/,
      ],
      [
        'JSON instead of a form',
        async () => call('POST', '/v1/token', { body: '{}', type: 'application/json', as: WEB }),
        400,
        'invalid_request',
        /x-www-form-urlencoded/,
      ],
      [
        'an oversized request',
        async () => call('POST', '/v1/token', { body: `grant_type=x&pad=${'a'.repeat(70_000)}`, as: WEB }),
        413,
        'invalid_request',
        /larger than/,
      ],
      [
        'a garbage subject token',
        async () => exchange({ subject_token: 'garbage', audience: ORDERS, scope: 'orders:read' }, WEB),
        400,
        'invalid_grant',
        /subject_token/,
      ],
      [
        'a subject token for another audience',
        async () => exchange({ subject_token: await jwtSvid(ALICE, BILLING), audience: ORDERS, scope: 'orders:read' }, WEB),
        400,
        'invalid_grant',
        /is not the client/,
      ],
      [
        'a subject token signed by a trust domain this server does not federate with',
        async () => exchange({ subject_token: foreignSvid(), audience: ORDERS, scope: 'orders:read' }, WEB),
        400,
        'invalid_grant',
        /no bundle for trust domain 'evil.test'/,
      ],
      [
        'a scope no policy grants',
        async () => exchange({ subject_token: await jwtSvid(ALICE, WEB), audience: ORDERS, scope: 'billing:pay' }, WEB),
        400,
        'invalid_scope',
        /does not grant billing:pay/,
      ],
      [
        'a target no policy allows',
        async () => exchange({ subject_token: await jwtSvid(ALICE, WEB), audience: `${TD}/ns/bank/vault`, scope: 'orders:read' }, WEB),
        400,
        'invalid_target',
        /for audience spiffe:\/\/e2e.test\/ns\/bank\/vault/,
      ],
      [
        'a duplicated parameter',
        async () =>
          call('POST', '/v1/token', {
            body: `${form({ grant_type: EXCHANGE, subject_token_type: JWT, subject_token: 'a', audience: ORDERS })}&scope=a&scope=b`,
            as: WEB,
          }),
        400,
        'invalid_request',
        /more than once/,
      ],
    ];
    for (const [name, send, status, error, description] of cases)
      it(`${name}: ${status} ${error}`, async () => {
        const r = await send();
        assert.equal(r.status, status, JSON.stringify(r.body));
        assert.equal(r.body['error'], error);
        assert.match(r.body['error_description'] as string, description);
        assert.match(r.body['code'] as string, /^ERR_/);
        assert.equal(r.body['access_token'], undefined);
      });
  });

  it('a subject from a federated trust domain: refused until a TokenPolicy names its subjects, then granted', async () => {
    const partner = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = partner.publicKey.export({ format: 'jwk' });
    const put = await call('PUT', '/v1/federated-bundles/partner.test', {
      body: JSON.stringify({ keys: [{ ...jwk, use: 'jwt-svid', kid: 'p1' }], spiffe_sequence: 1 }),
      type: 'application/json',
      admin: true,
    });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const bob = foreignSvid('spiffe://partner.test/users/bob', partner.privateKey, 'p1');
    const refused = await exchange({ subject_token: bob, audience: ORDERS, scope: 'orders:read' }, WEB);
    assert.equal(refused.status, 400, JSON.stringify(refused.body));
    assert.equal(refused.body['error'], 'invalid_grant');
    assert.match(refused.body['error_description'] as string, /does not allow tokens on behalf of spiffe:\/\/partner.test\/users\/bob/);
    await applyPolicy(
      srv,
      srv.dataDir,
      POLICY.replace('name: shop', 'name: partners').replace(`"${TD}/users/*", "${TD}/ns/shop/*"`, '"spiffe://partner.test/users/*"'),
    );
    const granted = await exchange({ subject_token: bob, audience: ORDERS, scope: 'orders:read' }, WEB);
    assert.equal(granted.status, 200, JSON.stringify(granted.body));
    assert.equal(claimsOf(granted.body['access_token'] as string)['sub'], 'spiffe://partner.test/users/bob');
  });

  it('every grant and refusal is in the decision log with its reason (action token-exchange)', async () => {
    const r = await call('GET', `/v1/decisions?from=${encodeURIComponent(WEB)}&limit=1000`, { admin: true });
    assert.equal(r.status, 200);
    const mine = (r.body['decisions'] as Array<Record<string, string>>).filter((d) => d['action'] === 'token-exchange');
    const allow = mine.find((d) => d['decision'] === 'allow' && d['to'] === ORDERS && d['rule'] === 'TokenPolicy/shop');
    assert.ok(allow, JSON.stringify(mine.slice(0, 3)));
    assert.equal(allow['rule'], 'TokenPolicy/shop');
    assert.match(allow['reason']!, /granted by TokenPolicy shop: orders:read/);
    const deny = mine.find((d) => d['decision'] === 'deny' && /billing:pay/.test(d['reason']!));
    assert.ok(deny);
    assert.match(deny['reason']!, /^ERR_TOKEN_SCOPE_INVALID: /);
    const m = await call('GET', '/metrics');
    assert.match(m.body['text'] as string, /^writ_token_exchanges_total\{result="granted"\} [1-9]\d*$/m);
    assert.match(m.body['text'] as string, /^writ_token_exchanges_total\{result="invalid_scope"\} [1-9]\d*$/m);
  });

  it('a client assertion used again is granted again (verified once, remembered); the same one with another signature is refused', async () => {
    const assertion = await jwtSvid(WEB, TD);
    const subject = await jwtSvid(ALICE, WEB);
    const asClient = (client_assertion: string) =>
      exchange({
        subject_token: subject,
        audience: ORDERS,
        scope: 'orders:read',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion,
      });
    for (let i = 0; i < 2; i++) assert.equal((await asClient(assertion)).status, 200);
    const [h, p, sig] = assertion.split('.');
    const forged = `${h}.${p}.${sig!.slice(0, -4)}${sig!.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
    const r = await asClient(forged);
    assert.equal(r.status, 401, JSON.stringify(r.body));
    assert.equal(r.body['error'], 'invalid_client');
    assert.match(r.body['error_description'] as string, /client_assertion rejected/);
  });

  it('the server log (level info) has a request line for each refused exchange, none for a granted one: grants are in the decision log', () => {
    const lines = srv.logs.map((l) => JSON.parse(l) as { msg?: string; route?: string; status?: number; level?: number });
    const token = lines.filter((l) => l.msg === 'request' && l.route === '/v1/token');
    assert.ok(
      token.some((l) => l.status === 400),
      'a refused exchange (invalid_scope) is logged',
    );
    assert.deepEqual(
      token.filter((l) => l.status === 200),
      [],
    );
  });

  it('exchanges in flight together share a commit of the decision log, and each answer comes after its own record', async () => {
    const grants = async (): Promise<number> => {
      const r = await call('GET', `/v1/decisions?from=${encodeURIComponent(WEB)}&limit=1000`, { admin: true });
      return (r.body['decisions'] as Array<Record<string, string>>).filter(
        (d) => d['action'] === 'token-exchange' && d['decision'] === 'allow' && /orders:together/.test(d['reason']!),
      ).length;
    };
    const subject = await jwtSvid(ALICE, WEB);
    const before = await grants();
    const answers = await Promise.all(
      Array.from({ length: 16 }, (_, i) => exchange({ subject_token: subject, audience: ORDERS, scope: `orders:together${i}` }, WEB)),
    );
    for (const a of answers) assert.equal(a.status, 200, JSON.stringify(a.body));
    assert.equal(await grants(), before + 16, 'every grant of the batch is in the log once all were answered');
  });

  it('the server still has its TokenPolicy in the policy list, with its kind', async () => {
    const r = await call('GET', '/v1/policies', { admin: true });
    const p = (r.body['policies'] as Array<Record<string, unknown>>).find((x) => x['name'] === 'TokenPolicy/shop');
    assert.equal(p?.['kind'], 'TokenPolicy');
  });
});

/** A well-formed JWT-SVID for web, signed by a key of another trust domain (by default one the server holds no bundle for). */
function foreignSvid(sub = 'spiffe://evil.test/users/alice', key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, kid = 'evil'): string {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${b64({ alg: 'ES256', kid, typ: 'JWT' })}.${b64({ sub, aud: WEB, exp: now + 300, iat: now })}`;
  return `${input}.${sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}
