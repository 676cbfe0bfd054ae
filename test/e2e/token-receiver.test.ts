/**
 * The receiving side of token exchange against real processes: a `writ server`, an agent, and
 * `writ proxy --inbound` in front of a Node app. A client (web, an X.509-SVID over mTLS) gets a
 * token from `POST /v1/token` for orders and calls orders through its proxy, whose AccessPolicy
 * asks for `token: { scope: orders:read }`: allowed with the right token; refused, with the reason,
 * without one, with one for another audience, one signed by another key or not at all, and one
 * whose scope does not cover the action. Tokens never reach the proxy's log.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect as http2Connect } from 'node:http2';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signToken } from '@writ/broker';
import { applyPolicy, cleanup, onFreePorts, serverWithAgent, startProxyProcess, waitFor, writ, type AgentProcess, type ServerProcess } from './helpers.ts';

const TD = 'spiffe://e2e.test';
const WEB = `${TD}/ns/shop/web`;
const ORDERS = `${TD}/ns/shop/orders`;
const BILLING = `${TD}/ns/shop/billing`;
const ALICE = `${TD}/users/alice`;
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';

const BOB = `${TD}/users/bob`;

const POLICY = `apiVersion: writ.dev/v1
kind: TokenPolicy
metadata: { name: a-short }
spec:
  clients: ["${WEB}"]
  subjects: ["${BOB}"]
  audiences: ["${ORDERS}"]
  scopes: ["orders:read"]
  maxTtl: 1s
---
apiVersion: writ.dev/v1
kind: TokenPolicy
metadata: { name: shop }
spec:
  clients: ["${WEB}"]
  subjects: ["${TD}/users/*"]
  audiences: ["${TD}/ns/shop/*", "${TD}"]
  scopes: ["orders:*"]
  requestedTokenTypes: [jwt, txn_token]
  maxTtl: 2m
---
apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: ${ORDERS}
  rules:
    - name: read-orders
      effect: allow
      from: ["${WEB}"]
      actions: [{ methods: [GET], paths: ["/v1/orders/*"] }]
      when: [{ token: { scope: orders:read, subject: "${TD}/users/*", maxDepth: 1 } }]
    - name: health
      effect: allow
      from: ["${WEB}"]
      actions: [{ methods: [GET], paths: ["/healthz"] }]
`;

let env: { srv: ServerProcess; agent: AgentProcess; stop(): Promise<void> };
let app: Server;
let proxy: ChildProcess;
let proxyPort: number;
let web: { cert: Buffer; key: Buffer; ca: Buffer };
const logs: string[] = [];
const seen: Array<{ url: string; peer: string | undefined; authorization: string | undefined }> = [];

interface Res {
  status: number;
  body: Record<string, unknown>;
  headers: Record<string, string | string[] | undefined>;
}

function call(url: string, opts: { method?: string; body?: string; headers?: Record<string, string>; ca: Buffer; cert?: Buffer; key?: Buffer }): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: opts.method ?? 'GET',
        ca: opts.ca,
        ...(opts.cert ? { cert: opts.cert, key: opts.key } : {}),
        headers: opts.headers ?? {},
        checkServerIdentity: () => undefined,
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          let body: Record<string, unknown>;
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

const serverCa = (): Buffer => readFileSync(join(env.srv.dataDir, 'bundle.pem'));

async function jwtSvid(spiffeId: string, audience: string): Promise<string> {
  const r = await call(`${env.srv.url}/v1/svids/jwt`, {
    method: 'POST',
    ca: serverCa(),
    body: JSON.stringify({ spiffeId, audience: [audience] }),
    headers: { authorization: `Bearer ${env.srv.adminToken}`, 'content-type': 'application/json' },
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body['token'] as string;
}

/** A real token from the server's token endpoint: web, over mTLS, on behalf of alice. */
async function mint(audience: string, scope: string, subject = ALICE, requested = JWT): Promise<string> {
  const body = new URLSearchParams({
    requested_token_type: requested,
    grant_type: EXCHANGE,
    subject_token_type: JWT,
    subject_token: await jwtSvid(subject, WEB),
    audience,
    scope,
  }).toString();
  const r = await call(`${env.srv.url}/v1/token`, {
    method: 'POST',
    ca: serverCa(),
    cert: web.cert,
    key: web.key,
    body,
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body['access_token'] as string;
}

/** Through the proxy, as web (its X.509-SVID). */
const viaProxy = (path: string, headers: Record<string, string> = {}): Promise<Res> =>
  call(`https://127.0.0.1:${proxyPort}${path}`, { ca: web.ca, cert: web.cert, key: web.key, headers });

before(async () => {
  env = await serverWithAgent(ORDERS, 'rx');
  const dir = mkdtempSync(join(tmpdir(), 'writ-rx-'));
  const m = await writ(env.srv, ['svid', 'mint-x509', '--spiffe-id', WEB, '--out', dir]);
  assert.equal(m.code, 0, m.stderr);
  web = { cert: readFileSync(join(dir, 'svid.pem')), key: readFileSync(join(dir, 'svid.key')), ca: readFileSync(join(dir, 'bundle.pem')) };
  cleanup(dir);
  await applyPolicy(env.srv, env.agent.dataDir, POLICY);
  app = createServer((req, res) => {
    const peer = req.headers['x-writ-peer-id'];
    seen.push({ url: req.url ?? '', peer: typeof peer === 'string' ? peer : undefined, authorization: req.headers.authorization });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ ok: true, url: req.url }));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const appPort = (app.address() as { port: number }).port;
  await onFreePorts(1, async ([p]) => {
    proxyPort = p!;
    proxy = await startProxyProcess(env.agent.socket, ['--inbound', `127.0.0.1:${proxyPort}=127.0.0.1:${appPort}`], { logs });
  });
  // The policy with the token rule reaches the proxy through the agent.
  await waitFor('the proxy to serve with the policy', async () => ((await viaProxy('/healthz')).status === 200 ? true : undefined));
});

after(async () => {
  proxy?.kill();
  await new Promise<void>((r) => (app ? app.close(() => r()) : r()));
  await env?.stop();
});

describe('writ proxy --inbound enforces token conditions', () => {
  it('a token minted for orders with orders:read passes, and the app gets the caller and the token', async () => {
    const token = await mint(ORDERS, 'orders:read');
    const r = await viaProxy('/v1/orders/42', { authorization: `Bearer ${token}` });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, { ok: true, url: '/v1/orders/42' });
    const last = seen.at(-1)!;
    assert.equal(last.peer, WEB);
    assert.equal(last.authorization, `Bearer ${token}`);
  });

  it('without a token: 401 ERR_TOKEN_REQUIRED and a Bearer challenge; a rule without a token condition still needs none', async () => {
    const before = seen.length;
    const r = await viaProxy('/v1/orders/42');
    assert.equal(r.status, 401);
    assert.equal(r.body['code'], 'ERR_TOKEN_REQUIRED');
    assert.match(r.body['decisionId'] as string, /^[0-9a-f-]{36}$/);
    assert.match(r.body['reason'] as string, /a Writ token with scope orders:read is required/);
    assert.equal(r.headers['www-authenticate'], 'Bearer');
    assert.equal(seen.length, before, 'the app never saw it');
    assert.equal((await viaProxy('/healthz')).status, 200);
  });

  it('a token for another audience: 401 ERR_TOKEN_INVALID naming the audience (RFC 6750 invalid_token)', async () => {
    const token = await mint(BILLING, 'orders:read');
    const r = await viaProxy('/v1/orders/42', { authorization: `Bearer ${token}` });
    assert.equal(r.status, 401);
    assert.equal(r.body['code'], 'ERR_TOKEN_INVALID');
    assert.match(r.body['reason'] as string, new RegExp(`the token is for ${BILLING}, not ${ORDERS}`));
    assert.match(String(r.headers['www-authenticate']), /^Bearer error="invalid_token", error_description="/);
  });

  it('an expired token (TokenPolicy a-short: maxTtl 1s): allowed while it lives, then 401 ERR_TOKEN_INVALID "expired"', async () => {
    const token = await mint(ORDERS, 'orders:read', BOB);
    assert.equal((await viaProxy('/v1/orders/1', { authorization: `Bearer ${token}` })).status, 200);
    const expiry = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString())['exp'] as number;
    // Past exp and the 5 s of skew the receiver allows, the same token is refused.
    await new Promise((r) => setTimeout(r, Math.max(0, (expiry + 6) * 1000 - Date.now())));
    const r = await viaProxy('/v1/orders/1', { authorization: `Bearer ${token}` });
    assert.equal(r.status, 401, JSON.stringify(r.body));
    assert.equal(r.body['code'], 'ERR_TOKEN_INVALID');
    assert.match(r.body['reason'] as string, /^token rejected: expired at /);
  });

  it('a token re-signed with another key, and one with alg none: 401 ERR_TOKEN_INVALID', async () => {
    const token = await mint(ORDERS, 'orders:read');
    const [h, p] = token.split('.') as [string, string];
    const header = JSON.parse(Buffer.from(h, 'base64url').toString()) as { kid: string; typ: string };
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const forged = signToken(claims, header.typ, header.kid, { key: privateKey, keyType: 'ec-p256' });
    const unsigned = `${Buffer.from(JSON.stringify({ alg: 'none', kid: header.kid, typ: header.typ })).toString('base64url')}.${p}.`;
    for (const t of [forged, unsigned]) {
      const r = await viaProxy('/v1/orders/42', { authorization: `Bearer ${t}` });
      assert.equal(r.status, 401, JSON.stringify(r.body));
      assert.equal(r.body['code'], 'ERR_TOKEN_INVALID');
      assert.match(r.body['reason'] as string, /^token rejected: /);
    }
  });

  it('a token whose scope does not cover the action: 403 ERR_TOKEN_SCOPE_INSUFFICIENT (insufficient_scope)', async () => {
    const token = await mint(ORDERS, 'orders:list');
    const r = await viaProxy('/v1/orders/42', { authorization: `Bearer ${token}` });
    assert.equal(r.status, 403);
    assert.equal(r.body['code'], 'ERR_TOKEN_SCOPE_INSUFFICIENT');
    assert.match(r.body['reason'] as string, /the token's scope \(orders:list\) does not cover orders:read/);
    assert.match(String(r.headers['www-authenticate']), /error="insufficient_scope"/);
  });

  it('a transaction token in Txn-Token (aud: the trust domain) passes; one without the scope is refused', async () => {
    const txn = await mint(TD, 'orders:read', ALICE, 'urn:ietf:params:oauth:token-type:txn_token');
    const r = await viaProxy('/v1/orders/5', { 'txn-token': txn });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(seen.at(-1)?.peer, WEB);
    const narrow = await viaProxy('/v1/orders/5', { 'txn-token': await mint(TD, 'orders:list', ALICE, 'urn:ietf:params:oauth:token-type:txn_token') });
    assert.deepEqual([narrow.status, narrow.body['code']], [403, 'ERR_TOKEN_SCOPE_INSUFFICIENT']);
  });

  it('hostile values: garbage is 401, a token past the head limit 431, never a 500', async () => {
    for (const v of ['Bearer ', 'Bearer eyJ.eyJ.', `Bearer ey${'A'.repeat(15_000)}`, 'Basic Zm9vOmJhcg==', 'Bearer ey\u00ff.x.y']) {
      const r = await viaProxy('/v1/orders/42', { authorization: v });
      assert.equal(r.status, 401, `${v.slice(0, 30)}: ${JSON.stringify(r.body)}`);
      assert.match(r.body['code'] as string, /^ERR_TOKEN_(INVALID|REQUIRED)$/);
    }
    const big = await viaProxy('/v1/orders/42', { authorization: `Bearer ey${'A'.repeat(17_000)}` });
    assert.deepEqual([big.status, big.body['code']], [431, 'ERR_HEADERS_TOO_LARGE']);
  });

  it('over HTTP/2 the same: allowed with the token, refused with the reason without it', async () => {
    const token = await mint(ORDERS, 'orders:read');
    const session = http2Connect(`https://127.0.0.1:${proxyPort}`, { ca: web.ca, cert: web.cert, key: web.key, checkServerIdentity: () => undefined });
    const get = (headers: Record<string, string>): Promise<{ status: number; body: Record<string, unknown>; challenge: unknown }> =>
      new Promise((resolve, reject) => {
        const s = session.request({ ':path': '/v1/orders/9', ...headers });
        let text = '';
        let status = 0;
        let challenge: unknown;
        s.on('response', (h) => ((status = Number(h[':status'])), (challenge = h['www-authenticate'])));
        s.on('data', (d: Buffer) => (text += d.toString()));
        s.on('end', () => resolve({ status, body: JSON.parse(text), challenge }));
        s.on('error', reject);
        s.end();
      });
    try {
      assert.equal((await get({ authorization: `Bearer ${token}` })).status, 200);
      const none = await get({});
      assert.deepEqual([none.status, none.body['code'], none.challenge], [401, 'ERR_TOKEN_REQUIRED', 'Bearer']);
      const narrow = await get({ 'txn-token': await mint(ORDERS, 'orders:list') });
      assert.equal(narrow.status, 401, 'an access token in Txn-Token is not a transaction token');
      assert.equal(narrow.body['code'], 'ERR_TOKEN_INVALID');
    } finally {
      session.close();
    }
  });

  it("the proxy's decision log lines name the token's subject and scope, never the token", async () => {
    const token = await mint(ORDERS, 'orders:list');
    const r = await viaProxy('/v1/orders/43', { authorization: `Bearer ${token}` });
    assert.equal(r.status, 403);
    // The proxy writes its log line as it answers; it reaches this process's pipe a moment later.
    const line = await waitFor('the log line of the refusal', async () =>
      logs
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => l['decisionId'] === r.body['decisionId']),
    );
    assert.deepEqual(line['token'], { subject: ALICE, scopes: 'orders:list', type: 'access-token' });
    const signature = token.split('.')[2]!;
    assert.ok(!logs.some((l) => l.includes(signature) || l.includes(token.split('.')[1]!)), 'no token in the log');
  });
});
