/**
 * Token exchange through the agent (writ.broker.v1.TokenBroker/Exchange) against a real `writ
 * server` and `writ agent` process: this test process is the workload, attested by its uid, and
 * asks with the SDK's `exchangeToken`. PyJWT verifies the token from the discovery URL alone; a
 * second request is answered from the agent's cache (the server's counter does not move); a
 * refused scope is a clear error; a process the agent cannot attest to any entry gets nothing.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { verifyToken } from '@writ/broker';
import { GRPC_STATUS, TokenExchangeError, WorkloadClient } from '@writ/sdk';
import {
  DEBIAN_PYTHON,
  ROOT,
  applyPolicy,
  cleanup,
  run,
  startAgentProcess,
  startServerProcess,
  waitFor,
  writ,
  type AgentProcess,
  type ServerProcess,
  pythonStubs,
} from './helpers.ts';

const TD = 'spiffe://e2e.test';
const WEB = `${TD}/ns/shop/web`;
const ORDERS = `${TD}/ns/shop/orders`;

const POLICY = `apiVersion: writ.dev/v1
kind: TokenPolicy
metadata: { name: shop }
spec:
  clients: ["${TD}/ns/shop/*"]
  subjects: ["${TD}/ns/shop/*"]
  audiences: ["${TD}/ns/shop/*", "${TD}"]
  scopes: ["orders:*"]
  requestedTokenTypes: [jwt, txn_token]
  maxTtl: 2m
`;

let srv: ServerProcess;
let agent: AgentProcess;
let socketDir: string;
let client: WorkloadClient;

function get(path: string, admin = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${srv.url}${path}`,
      { ca: readFileSync(join(srv.dataDir, 'bundle.pem')), headers: admin ? { authorization: `Bearer ${srv.adminToken}` } : {} },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`GET ${path}: HTTP ${res.statusCode} ${text}`))));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** The server's count of token exchanges answered with `result`. */
async function exchanges(result: string): Promise<number> {
  const m = new RegExp(`^writ_token_exchanges_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(await get('/metrics'));
  return m ? Number(m[1]) : 0;
}

async function decisions(): Promise<Array<Record<string, string>>> {
  const body = JSON.parse(await get(`/v1/decisions?from=${encodeURIComponent(WEB)}&limit=1000`, true)) as { decisions: Array<Record<string, string>> };
  return body.decisions.filter((d) => d['action'] === 'token-exchange');
}

async function refusal(p: Promise<unknown>): Promise<TokenExchangeError> {
  const err = await p.then(
    () => assert.fail('expected a refusal'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof TokenExchangeError, String(err));
  return err;
}

const claimsOf = (token: string): Record<string, unknown> => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;

before(async () => {
  srv = await startServerProcess();
  const e = await writ(srv, ['entry', 'create', '--spiffe-id', WEB, '--parent-id', `${TD}/writ/agent/tb`, '--selector', `unix:uid:${process.getuid!()}`]);
  assert.equal(e.code, 0, e.stderr);
  await applyPolicy(srv, srv.dataDir, POLICY);
  const t = await writ(srv, ['token', 'create', '--node-name', 'tb', '-o', 'json']);
  assert.equal(t.code, 0, t.stderr);
  // A socket another user can reach: the unattested caller below runs as nobody.
  socketDir = mkdtempSync(join(tmpdir(), 'writ-tb-sock-'));
  chmodSync(socketDir, 0o755);
  agent = await startAgentProcess(srv, { joinToken: (JSON.parse(t.stdout) as { token: string }).token, socket: join(socketDir, 'api.sock') });
  client = new WorkloadClient(`unix://${agent.socket}`);
});

after(async () => {
  client?.close();
  await agent?.stop();
  await srv?.stop();
  for (const d of [srv?.dataDir, agent?.dataDir, socketDir]) if (d) cleanup(d);
});

describe('TokenBroker through the agent', () => {
  let first: Awaited<ReturnType<WorkloadClient['exchangeToken']>>;

  it('gives the attested workload a token for the audience, as itself, that PyJWT and verifyToken accept', async () => {
    first = await waitFor('the agent to serve the workload', () => client.exchangeToken({ audience: ORDERS, scope: 'orders:read' }));
    assert.equal(first.cached, false);
    assert.equal(first.tokenType, 'jwt');
    assert.deepEqual(first.scope, ['orders:read']);
    const claims = claimsOf(first.token);
    assert.equal(claims['sub'], WEB);
    assert.equal(claims['aud'], ORDERS);
    assert.equal(claims['client_id'], WEB);
    assert.equal(claims['act'], undefined, 'a workload exchanging its own identity acts for no one');
    assert.equal(first.expiresAt.getTime(), (claims['exp'] as number) * 1000);

    const py = await run(DEBIAN_PYTHON, [join(ROOT, 'test/python/verify_token.py'), `${srv.url}/.well-known/openid-configuration`, first.token, ORDERS], {
      env: { SSL_CERT_FILE: join(srv.dataDir, 'bundle.pem') },
    });
    assert.equal(py.stderr, '');
    assert.match(py.stdout, /^OK /);
    const verified = JSON.parse(py.stdout.slice(3)) as { header: Record<string, unknown>; claims: Record<string, unknown> };
    assert.equal(verified.header['typ'], 'at+jwt');
    assert.equal(verified.claims['sub'], WEB);
    assert.equal(verified.claims['scope'], 'orders:read');

    const disco = JSON.parse(await get('/.well-known/openid-configuration')) as { issuer: string };
    const bundles = await client.fetchJwtBundles();
    const v = verifyToken(first.token, {
      bundles: { get: (n: string) => bundles.get(n) },
      trustDomain: 'e2e.test',
      audience: ORDERS,
      issuer: disco.issuer,
      types: ['access-token'],
    });
    assert.equal(v.subject, WEB);
    assert.deepEqual(v.scopes, ['orders:read']);
  });

  it('answers the same request again from its cache: the server is not asked', async () => {
    const granted = await exchanges('granted');
    const logged = (await decisions()).length;
    const again = await client.exchangeToken({ audience: ORDERS, scope: ['orders:read'] });
    assert.equal(again.cached, true);
    assert.equal(again.token, first.token);
    assert.equal(await exchanges('granted'), granted);
    assert.equal((await decisions()).length, logged);
    // Another scope set is another token, from the server.
    const wider = await client.exchangeToken({ audience: ORDERS, scope: 'orders:read orders:list' });
    assert.equal(wider.cached, false);
    assert.deepEqual([...wider.scope].sort(), ['orders:list', 'orders:read']);
    assert.equal(await exchanges('granted'), granted + 1);
  });

  it('a grpcio client generated from writ_broker.proto speaks the same messages (served from the cache, refusals as statuses)', async () => {
    const stubs = await pythonStubs('writ_broker.proto');
    try {
      const py = async (...args: string[]): Promise<Record<string, unknown>> => {
        const r = await run(DEBIAN_PYTHON, [join(ROOT, 'test/e2e/fixtures/broker_client.py'), stubs, agent.socket, ...args]);
        assert.equal(r.code, 0, r.stderr);
        return JSON.parse(r.stdout) as Record<string, unknown>;
      };
      const r = await py(ORDERS, 'orders:read');
      assert.equal(r['token'], first.token);
      assert.equal(r['cached'], true);
      assert.equal(r['token_type'], 'jwt');
      assert.deepEqual(r['scope'], ['orders:read']);
      assert.equal(r['expires_at'], Math.floor(first.expiresAt.getTime() / 1000));
      const refused = await py(ORDERS, 'billing:pay');
      assert.equal(refused['status'], 'INVALID_ARGUMENT');
      assert.match(String(refused['details']), /^invalid_scope: .*billing:pay.* \[ERR_TOKEN_SCOPE_INVALID\]$/);
    } finally {
      cleanup(stubs);
    }
  });

  it('a transaction token for the trust domain, with the request context', async () => {
    const t = await client.exchangeToken({ audience: TD, scope: 'orders:read', tokenType: 'txn_token', requestContext: { req_ip: '10.0.0.7' } });
    assert.equal(t.tokenType, 'txn_token');
    const claims = claimsOf(t.token);
    assert.equal(claims['sub'], WEB);
    assert.deepEqual(claims['rctx'], { req_ip: '10.0.0.7' });
    assert.equal(claims['aud'], TD);
  });

  it('a scope the policy does not grant is a clear refusal, never cached', async () => {
    for (let i = 0; i < 2; i++) {
      const before = await exchanges('invalid_scope');
      const e = await refusal(client.exchangeToken({ audience: ORDERS, scope: 'billing:pay' }));
      assert.equal(e.code, GRPC_STATUS.INVALID_ARGUMENT);
      assert.equal(e.error, 'invalid_scope');
      assert.equal(e.writCode, 'ERR_TOKEN_SCOPE_INVALID');
      assert.match(e.message, /billing:pay/);
      assert.equal(await exchanges('invalid_scope'), before + 1, 'each refusal was decided by the server');
    }
    const bad = await refusal(client.exchangeToken({ audience: 'https://orders.example', scope: 'orders:read' }));
    assert.equal(bad.code, GRPC_STATUS.INVALID_ARGUMENT);
    assert.equal(bad.error, 'invalid_request');
    assert.equal(bad.writCode, 'ERR_TOKEN_REQUEST_INVALID');
    assert.match(bad.message, /audience must be a SPIFFE ID/);
  });

  it('a process that no entry matches gets nothing', { skip: process.getuid!() === 0 ? false : 'runs a process as nobody: needs root' }, async () => {
    const script = `
      import { WorkloadClient } from '@writ/sdk';
      const c = new WorkloadClient(process.argv[1], { attempts: 1 });
      c.exchangeToken({ audience: '${ORDERS}', scope: 'orders:read' }).then(
        (t) => console.log('TOKEN', t.token.length),
        (e) => console.log('REFUSED', e.name, e.code, e.details),
      ).finally(() => c.close());`;
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script, `unix://${agent.socket}`], {
        cwd: ROOT,
        uid: 65534,
        gid: 65534,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let text = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (text += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('error', reject);
      child.on('close', () => (err && !text ? reject(new Error(err)) : resolve(text.trim())));
    });
    assert.equal(out, `REFUSED TokenExchangeError ${GRPC_STATUS.PERMISSION_DENIED} no identity issued`);
  });

  it('a quarantine of the caller drops its cached tokens: after the lift, the next token comes from the server', async () => {
    assert.equal((await client.exchangeToken({ audience: ORDERS, scope: 'orders:read' })).cached, true);
    assert.equal((await writ(srv, ['quarantine', 'add', WEB, '--reason', 'e2e'])).code, 0);
    const once = new WorkloadClient(`unix://${agent.socket}`, { attempts: 1 });
    try {
      const refused = await waitFor('the quarantine to reach the agent', () =>
        once.exchangeToken({ audience: ORDERS, scope: 'orders:read' }).then(
          () => undefined,
          (e: TokenExchangeError) => e,
        ),
      );
      assert.equal(refused.code, GRPC_STATUS.PERMISSION_DENIED);
      assert.equal((await writ(srv, ['quarantine', 'remove', WEB])).code, 0);
      const next = await waitFor('the lift to reach the agent', () => once.exchangeToken({ audience: ORDERS, scope: 'orders:read' }));
      assert.equal(next.cached, false);
      assert.notEqual(next.token, first.token);
    } finally {
      once.close();
    }
  });
});
