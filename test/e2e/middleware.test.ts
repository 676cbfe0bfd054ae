/** SDK middleware for node:http, Express and Fastify, with the policy streamed from a real agent. */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import Fastify from 'fastify';
import { DecisionReporter, JwtSource, LocalPolicy, WorkloadClient, writFastify, writMiddleware, type WritRequestInfo } from '@writ/sdk';
import {
  applyPolicy,
  cleanup,
  ordersPolicy,
  run,
  startAgentProcess,
  startServerProcess,
  waitFor,
  writ,
  type AgentProcess,
  type RunResult,
  type ServerProcess,
} from './helpers.ts';
import { CALLER, CASES, assertHttpAnswer, tablePolicy } from './enforcement-cases.ts';

const ME = 'spiffe://e2e.test/ns/orders/sa/api';
const WEB = 'spiffe://e2e.test/ns/web/sa/frontend';
const LEGACY = 'spiffe://e2e.test/ns/legacy/batch';
let srv: ServerProcess;
let agent: AgentProcess;
let policy: LocalPolicy;
let jwt: JwtSource;
let reporter: DecisionReporter;
const tokens = new Map<string, string>();
/** Every decision the middleware made (its onDecision hook). */
const decided: Array<{ url: string; reason: string; rule: string | undefined }> = [];
const servers: Array<{ name: string; url: string; close: () => Promise<unknown> }> = [];

const apply = (yaml: string): Promise<void> => applyPolicy(srv, agent.dataDir, yaml);

/** `writ` against `server`; it must exit 0. */
async function ok(server: ServerProcess, args: string[]): Promise<RunResult> {
  const r = await writ(server, args);
  assert.equal(r.code, 0, `writ ${args.join(' ')}: ${r.stderr}`);
  return r;
}

before(async () => {
  srv = await startServerProcess();
  for (const id of [ME, WEB, LEGACY])
    await ok(srv, ['entry', 'create', '--spiffe-id', id, '--parent-id', 'spiffe://e2e.test/writ/agent/mw', '--selector', 'unix:uid:0']);
  const token = JSON.parse((await ok(srv, ['token', 'create', '--node-name', 'mw', '-o', 'json'])).stdout).token as string;
  agent = await startAgentProcess(srv, { joinToken: token });
  await apply(ordersPolicy(ME, 'GET'));
  const endpoint = `unix://${agent.socket}`;
  const c = new WorkloadClient(endpoint);
  for (const id of [WEB, LEGACY]) tokens.set(id, (await c.fetchJwtSvids([ME], id))[0]!.svid);
  c.close();
  jwt = await JwtSource.create({ endpoint });
  policy = await LocalPolicy.create({ endpoint });
  await waitFor('the first policy revision in the SDK', async () => (policy.revision > 0 ? true : undefined));
  reporter = new DecisionReporter(endpoint, { flushMs: 200 });
  const opts = {
    policy,
    to: ME,
    jwt: { source: jwt, audience: ME },
    reporter,
    onDecision: (info: WritRequestInfo, req: IncomingMessage) =>
      decided.push({ url: req.url ?? '', reason: info.decision.reason, rule: info.decision.rule?.name }),
  };
  const reply = (info: WritRequestInfo | undefined) => JSON.stringify({ peer: info?.peer?.uri, rule: info?.decision.rule?.name });

  const plain: Server = createServer((req, res) =>
    writMiddleware(opts)(req, res, () => res.end(reply((req as IncomingMessage & { writ?: WritRequestInfo }).writ))),
  );
  const app = express();
  app.use(writMiddleware(opts));
  app.get('/v1/orders/:id', (req, res) => void res.send(reply((req as unknown as { writ: WritRequestInfo }).writ)));
  app.post('/v1/orders/:id', (req, res) => void res.send(reply((req as unknown as { writ: WritRequestInfo }).writ)));
  const fastify = Fastify();
  await fastify.register(writFastify as never, opts);
  fastify.get('/v1/orders/:id', async (request) => reply((request as unknown as { writ: WritRequestInfo }).writ));
  fastify.post('/v1/orders/:id', async (request) => reply((request as unknown as { writ: WritRequestInfo }).writ));
  await fastify.listen({ port: 0, host: '127.0.0.1' });
  for (const [name, s] of [
    ['node:http', plain],
    ['express', createServer(app)],
  ] as const) {
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    servers.push({ name, url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, close: () => new Promise((r) => s.close(r)) });
  }
  servers.push({ name: 'fastify', url: `http://127.0.0.1:${(fastify.server.address() as AddressInfo).port}`, close: () => fastify.close() });
});

after(async () => {
  for (const s of servers) await s.close();
  policy?.close();
  jwt?.close();
  await reporter?.close();
  await agent?.stop();
  await srv?.stop();
  cleanup(srv.dataDir);
  cleanup(agent.dataDir);
});

async function call(url: string, method: string, as?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${url}/v1/orders/7`, { method, headers: as ? { authorization: `Bearer ${tokens.get(as)}` } : {} });
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

/** A raw HTTP/1.1 request (fetch would resolve dot segments before sending), with a bearer token when given. */
function raw(url: string, method: string, path: string, token?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const s = connect(Number(new URL(url).port), '127.0.0.1', () =>
      s.write(`${method} ${path} HTTP/1.1\r\nHost: x\r\n${token ? `Authorization: Bearer ${token}\r\n` : ''}Content-Length: 0\r\nConnection: close\r\n\r\n`),
    );
    let out = '';
    s.on('data', (d) => (out += d.toString()));
    s.on('error', reject);
    s.on('close', () => {
      const i = out.indexOf('\r\n\r\n');
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(out.slice(i + 4)) as Record<string, unknown>;
      } catch {
        body = { text: out.slice(i + 4, i + 200) }; // a framework's own 404 page
      }
      resolve({ status: Number(out.slice(9, 12)), body });
    });
  });
}

describe('SDK middleware, deciding in-process from the policy the agent streams', () => {
  it('node:http, Express and Fastify allow, deny with 403 {code, decisionId}, and refuse the unauthenticated', async () => {
    for (const s of servers) {
      const ok = await call(s.url, 'GET', WEB);
      assert.equal(ok.status, 200, `${s.name}: ${JSON.stringify(ok.body)}`);
      assert.deepEqual(ok.body, { peer: WEB, rule: 'orders#0' }, `${s.name}: req.writ.peer reaches the handler`);
      const post = await call(s.url, 'POST', WEB);
      assert.equal(post.status, 403, s.name);
      assert.equal(post.body['code'], 'NO_MATCHING_ALLOW');
      assert.match(String(post.body['decisionId']), /^[0-9a-f-]{36}$/);
      assert.equal((await call(s.url, 'GET', LEGACY)).body['code'], 'DENY_RULE', s.name);
      const anon = await call(s.url, 'GET');
      assert.equal(anon.status, 401, s.name);
      assert.equal(anon.body['code'], 'UNAUTHENTICATED');
    }
  });

  it('decide on the path in normal form: a respelled path gets the same decision, a "." or ".." segment a 400 before any handler', async () => {
    for (const s of servers) {
      // Allowed as "/v1/orders/7" everywhere; then each framework routes that spelling its own way:
      // node:http's handler answers any path, Express's and Fastify's routers match no route.
      const respelled = await raw(s.url, 'GET', '/v1/%6Frders//7', tokens.get(WEB));
      assert.deepEqual(decided.at(-1), { url: '/v1/%6Frders//7', reason: 'ALLOW_RULE', rule: 'orders#0' }, s.name);
      assert.equal(respelled.status, s.name === 'node:http' ? 200 : 404, `${s.name}: ${JSON.stringify(respelled.body)}`);
      if (s.name === 'node:http') assert.deepEqual(respelled.body, { peer: WEB, rule: 'orders#0' });
      assert.equal((await raw(s.url, 'GET', '/v1/%6Frders//7', tokens.get(LEGACY))).body['code'], 'DENY_RULE', s.name);
      for (const p of ['/v1/orders/%2e%2e', '/v1/orders/7/..', '/v1/./orders/7', '/v1/orders/%7']) {
        const r = await raw(s.url, 'GET', p, tokens.get(WEB));
        assert.equal(r.status, 400, `${s.name} ${p}: ${JSON.stringify(r.body)}`);
        // Fastify refuses a broken escape itself, before any hook runs.
        assert.equal(r.body['code'], s.name === 'fastify' && p.endsWith('%7') ? 'FST_ERR_BAD_URL' : 'ERR_PATH_INVALID', `${s.name} ${p}`);
      }
    }
  });

  it("in-process decisions reach the server's decision log through the agent", async () => {
    await waitFor('SDK decisions in the log', async () => {
      const r = JSON.parse((await writ(srv, ['decisions', 'query', '--from', LEGACY, '-o', 'json'])).stdout) as Array<Record<string, unknown>>;
      return r.some((d) => d['reason'] === 'DENY_RULE' && d['to'] === ME) ? true : undefined;
    });
  });

  it("thousands of decisions in one flush all arrive (batches stay under the agent's 64 KiB message limit)", async () => {
    const metric = async (): Promise<number> => {
      const m = (await run('curl', ['-sS', '--cacert', join(srv.dataDir, 'bundle.pem'), `${srv.url}/metrics`])).stdout;
      return Number(/writ_authz_decisions_total\{decision="allow",reason="ALLOW_RULE"\} (\d+)/.exec(m)?.[1] ?? 0);
    };
    const before = await metric();
    const bulk = new DecisionReporter(`unix://${agent.socket}`, { flushMs: 60_000 });
    for (let i = 0; i < 3000; i++) {
      bulk.record({
        id: `bulk-${i}-${process.pid}`,
        at: Date.now(),
        from: WEB,
        to: ME,
        action: `GET /v1/orders/${i}`,
        decision: 'allow',
        reason: 'ALLOW_RULE',
        rule: 'orders-api#0',
        policyRevision: 1,
        latencyNs: 1000,
      });
    }
    await bulk.close();
    assert.deepEqual(bulk.stats, { buffered: 0, dropped: 0 });
    await waitFor('all 3,000 at the server', async () => ((await metric()) - before >= 3000 ? true : undefined));
  });

  it('an SDK mTLS server closes a live connection when the peer is quarantined', async () => {
    const { X509Source, createMtlsServer, mtlsConnect, authorizeMemberOf } = await import('@writ/sdk');
    const endpoint = `unix://${agent.socket}`;
    const serverSrc = await X509Source.create({ endpoint, pick: (s) => s.find((x) => x.spiffeId === ME) });
    const clientSrc = await X509Source.create({ endpoint, pick: (s) => s.find((x) => x.spiffeId === WEB) });
    const server = createMtlsServer({ source: serverSrc, authorize: authorizeMemberOf('e2e.test'), policy }, (socket) =>
      socket.on('data', (d) => socket.write(d)),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const sock = await mtlsConnect({
      source: clientSrc,
      authorize: authorizeMemberOf('e2e.test'),
      host: '127.0.0.1',
      port: (server.address() as AddressInfo).port,
    });
    let closed = false;
    sock.on('close', () => (closed = true)).on('error', () => undefined);
    sock.write('ping');
    await new Promise((r) => sock.once('data', r));
    assert.equal((await writ(srv, ['quarantine', 'add', WEB, '--reason', 'test'])).code, 0);
    try {
      await waitFor('the live connection to close', async () => (closed ? true : undefined));
    } finally {
      await ok(srv, ['quarantine', 'remove', WEB]);
      server.close();
      serverSrc.close();
      clientSrc.close();
    }
    await waitFor('the quarantine lifted in-process', async () => ((await call(servers[0]!.url, 'GET', WEB)).status === 200 ? true : undefined));
  });

  it('a policy change reaches the in-process policy of every server (time printed)', async (t) => {
    const t0 = Date.now();
    await apply(ordersPolicy(ME, 'GET, POST'));
    await waitFor('POST allowed', async () => ((await call(servers[0]!.url, 'POST', WEB)).status === 200 ? true : undefined));
    // Measured, not asserted: a loaded machine cannot promise a wall-clock bound (the wait above is the bound).
    t.diagnostic(`enforced in ${Date.now() - t0} ms`);
    for (const s of servers) assert.equal((await call(s.url, 'POST', WEB)).status, 200, s.name);
  });
});

describe('the shared enforcement table in the SDK middleware', () => {
  it('node:http, Express and Fastify give every case of the table its answer (as the proxy and the agent do)', async () => {
    // The table's policy alone governs ME: the orders policy of the tests above goes.
    const del = await writ(srv, ['policy', 'delete', 'orders']);
    assert.ok(del.code === 0 || /ERR_NOT_FOUND/.test(del.stderr), del.stderr);
    await apply(tablePolicy(ME));
    const mint = async (id: string): Promise<string> => {
      const r = await writ(srv, ['svid', 'mint-jwt', '--spiffe-id', id, '--audience', ME]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    const table = new Map<string, string>();
    for (const id of Object.values(CALLER)) table.set(id, await mint(id));
    const q = await writ(srv, ['quarantine', 'add', CALLER.quarantined, '--reason', 'enforcement table']);
    assert.equal(q.code, 0, q.stderr);
    try {
      await waitFor('the table policy and the quarantine in-process', async () =>
        (await raw(servers[0]!.url, 'GET', '/v1/orders/7', table.get(CALLER.quarantined))).body['code'] === 'QUARANTINED' &&
        (await raw(servers[0]!.url, 'GET', '/v1/orders/7', table.get(CALLER.legacy))).body['code'] === 'DENY_RULE' &&
        (await raw(servers[0]!.url, 'POST', '/v1/orders/7', table.get(CALLER.web))).body['code'] === 'NO_MATCHING_ALLOW'
          ? true
          : undefined,
      );
      for (const s of servers)
        for (const c of CASES) {
          const r = await raw(s.url, c.method, c.path, c.from && table.get(c.from));
          assertHttpAnswer(s.name, c, r.status, r.body);
        }
    } finally {
      await ok(srv, ['quarantine', 'remove', CALLER.quarantined]);
    }
  });
});
