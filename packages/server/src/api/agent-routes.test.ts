/** The agent API against a real server in this process: real TLS, a real agent SVID, SQLite. */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { createCsr, toPem } from '@writ/spiffe';
import { AGENT_PATHS, PROTOCOL_HEADER, PROTOCOL_VERSION } from '@writ/protocol';
import { loadServerConfig } from '../config.ts';
import { startServer, type RunningServer } from '../server.ts';

let dir: string;
let srv: RunningServer;
let caPem: string;
let admin: string;

function call(
  method: string,
  path: string,
  opts: { body?: unknown; token?: string; identity?: { cert: string; key: string }; headers?: Record<string, string> } = {},
): Promise<{ status: number; text: string; headers: Record<string, string | string[] | undefined> }> {
  const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, srv.url),
      {
        method,
        ca: caPem,
        ...(opts.identity ?? {}),
        headers: {
          ...opts.headers,
          ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
          ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
        },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** An attested agent: a join token redeemed with a CSR for a key made here. */
async function attest(node: string): Promise<{ cert: string; key: string }> {
  const tok = JSON.parse((await call('POST', '/v1/join-tokens', { body: { nodeName: node }, token: admin })).text).token as string;
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csr = toPem('CERTIFICATE REQUEST', createCsr({ key: k.privateKey, keyType: 'ec-p256' }, k.publicKey));
  const r = await call('POST', AGENT_PATHS.attestJoinToken, { body: { joinToken: tok, csr } });
  assert.equal(r.status, 201, r.text);
  return { cert: JSON.parse(r.text).svid as string, key: k.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
}

/** The series of one metric family in the Prometheus text. */
const series = (metrics: string, name: string): string[] => metrics.split('\n').filter((l) => l.startsWith(`${name}{`));

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-agent-routes-'));
  srv = await startServer(loadServerConfig({ trustDomain: 'routes.test', dataDir: dir, listen: '127.0.0.1:0' }), { log: pino({ level: 'silent' }) });
  caPem = readFileSync(join(dir, 'bundle.pem'), 'utf8');
  admin = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
});
after(async () => {
  await srv.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('decision metrics', () => {
  it('1,000 distinct reasons from several reporting agents add a fixed number of series to /metrics', async () => {
    const metricsText = async (): Promise<string> => (await call('GET', '/metrics')).text;
    const decision = (i: number, reason: string, decision = 'deny') => ({
      id: `card-${i}-${reason}`,
      at: Date.now(),
      from: 'spiffe://routes.test/a',
      to: 'spiffe://routes.test/b',
      action: 'GET /',
      decision,
      reason,
    });
    const first = await attest('card-0');
    // The known reasons first: each is a series of its own.
    const known = await call('POST', AGENT_PATHS.decisions, {
      identity: first,
      body: { decisions: [decision(0, 'ALLOW_RULE', 'allow'), decision(1, 'NO_MATCHING_ALLOW'), decision(2, 'QUARANTINED')] },
    });
    assert.equal(known.status, 200, known.text);
    const m0 = await metricsText();
    assert.ok(series(m0, 'writ_authz_decisions_total').some((l) => l.startsWith('writ_authz_decisions_total{decision="deny",reason="QUARANTINED"}')));
    const before = series(m0, 'writ_authz_decisions_total').length + series(m0, 'writ_decision_log_dropped_total').length;
    for (const n of [1, 2, 3]) {
      const identity = await attest(`card-${n}`);
      const body = {
        decisions: Array.from({ length: 1000 }, (_, i) => decision(n * 10_000 + i, `REASON_${n}_${i}`, i % 2 ? 'deny' : 'allow')),
        dropped: 7,
      };
      const r = await call('POST', AGENT_PATHS.decisions, { identity, body });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(JSON.parse(r.text), { stored: 1000 }, 'decisions with unknown reasons are still stored');
    }
    const m1 = await metricsText();
    const grown = series(m1, 'writ_authz_decisions_total').length + series(m1, 'writ_decision_log_dropped_total').length - before;
    // allow/OTHER and deny/OTHER, and the agents' drops under one reporter label.
    assert.ok(grown <= 3, `grew by ${grown} series:\n${series(m1, 'writ_authz_decisions_total').join('\n')}`);
    assert.match(m1, /writ_authz_decisions_total\{decision="deny",reason="OTHER"\} 1500/);
    assert.match(m1, /writ_decision_log_dropped_total\{reporter="agent"\} 21/);
    assert.doesNotMatch(m1, /REASON_|card-/, 'no value a client sent is a label');
    // The log keeps what was reported.
    const stored = JSON.parse((await call('GET', '/v1/decisions?to=spiffe%3A%2F%2Froutes.test%2Fb&limit=10000', { token: admin })).text).decisions as Array<{
      reason: string;
    }>;
    assert.ok(stored.some((d) => d.reason === 'REASON_2_7'));
  });
});

describe('agent renewal', () => {
  it('after a renewal the old SVID is refused at once, the new one works, and a ban refuses it too (each request, not each connection)', async () => {
    const old = await attest('renew-supersede');
    const sync = (identity: { cert: string; key: string }) => call('GET', `${AGENT_PATHS.sync}?since=0&wait=0`, { identity });
    // Twice: the second is answered from the record the first read.
    for (const _ of [1, 2]) assert.equal((await sync(old)).status, 200);
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const csr = toPem('CERTIFICATE REQUEST', createCsr({ key: k.privateKey, keyType: 'ec-p256' }, k.publicKey));
    const renewed = await call('POST', AGENT_PATHS.renew, { identity: old, body: { csr } });
    assert.equal(renewed.status, 200, renewed.text);
    const fresh = { cert: JSON.parse(renewed.text).svid as string, key: k.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
    const refused = await sync(old);
    assert.equal(refused.status, 401, refused.text);
    assert.match(JSON.parse(refused.text).message, /superseded SVID/);
    for (const _ of [1, 2]) assert.equal((await sync(fresh)).status, 200);
    const ban = await call('POST', `/v1/agents/${encodeURIComponent('spiffe://routes.test/writ/agent/renew-supersede')}/ban`, { token: admin });
    assert.equal(ban.status, 200, ban.text);
    const banned = await sync(fresh);
    assert.equal(banned.status, 403, banned.text);
    assert.equal(JSON.parse(banned.text).code, 'ERR_FORBIDDEN');
  });

  it('an agent evicted after it authenticated, before its request body arrived, gets a 401 (not a 500)', async () => {
    const identity = await attest('renew-race');
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const body = JSON.stringify({ csr: toPem('CERTIFICATE REQUEST', createCsr({ key: k.privateKey, keyType: 'ec-p256' }, k.publicKey)) });
    const answer = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      // Expect: 100-continue: the server says "continue" once it has authenticated the agent.
      const req = request(new URL(AGENT_PATHS.renew, srv.url), {
        method: 'POST',
        ca: caPem,
        ...identity,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), expect: '100-continue' },
      });
      req.on('continue', () => {
        call('POST', `/v1/agents/${encodeURIComponent('spiffe://routes.test/writ/agent/renew-race')}/evict`, { token: admin }).then((r) => {
          assert.equal(r.status, 200, r.text);
          req.end(body);
        }, reject);
      });
      req.on('response', (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    assert.equal(answer.status, 401, answer.text);
    assert.equal(JSON.parse(answer.text).code, 'ERR_UNAUTHENTICATED');
  });
});

describe('the agent routes declare their inputs in the route table', () => {
  it('the OpenAPI document names the sync query and each body field; anything else is a 400 naming it, before the handler', async () => {
    const doc = JSON.parse((await call('GET', '/v1/openapi.json')).text) as {
      paths: Record<string, Record<string, { parameters?: Array<{ name: string; in: string }>; requestBody?: unknown }>>;
    };
    const query = (path: string, method: string): string[] => (doc.paths[path]?.[method]?.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name);
    const fields = (path: string): string[] =>
      Object.keys(
        (doc.paths[path]!['post']!.requestBody as { content: Record<string, { schema: { properties?: object } }> }).content['application/json']!.schema
          .properties ?? {},
      );
    assert.deepEqual(query(AGENT_PATHS.sync, 'get'), ['since', 'wait', 'bundles', 'policy', 'quarantine', 'lean', 'images']);
    assert.deepEqual(fields(AGENT_PATHS.svids), ['requests']);
    assert.deepEqual(fields(AGENT_PATHS.jwtSvid), ['entryId', 'audience']);
    assert.deepEqual(fields(AGENT_PATHS.renew), ['csr']);
    assert.deepEqual(fields(AGENT_PATHS.decisions), ['decisions', 'dropped']);

    const identity = await attest('declared');
    const refused = async (method: string, path: string, body: unknown, code: string, field: string): Promise<void> => {
      const r = await call(method, path, { identity, token: admin, ...(body === undefined ? {} : { body }) });
      assert.equal(r.status, 400, `${method} ${path}: ${r.text}`);
      assert.deepEqual([JSON.parse(r.text).code, JSON.parse(r.text).field], [code, field], r.text);
    };
    await refused('GET', `${AGENT_PATHS.sync}?since=1.5&wait=0`, undefined, 'ERR_FIELD_INVALID', 'since');
    await refused('GET', `${AGENT_PATHS.sync}?since=0&wait=-1`, undefined, 'ERR_FIELD_INVALID', 'wait');
    await refused('GET', `${AGENT_PATHS.sync}?since=0&wait=0&policy=x`, undefined, 'ERR_FIELD_INVALID', 'policy');
    await refused('GET', `${AGENT_PATHS.sync}?since=0&wait=0&sinse=1`, undefined, 'ERR_FIELD_UNKNOWN', 'sinse');
    await refused('POST', `${AGENT_PATHS.renew}?x=1`, { csr: 'x' }, 'ERR_FIELD_UNKNOWN', 'x');
    await refused('POST', AGENT_PATHS.renew, { csr: 'x', spiffeId: 'spiffe://routes.test/writ/server' }, 'ERR_FIELD_UNKNOWN', 'spiffeId');
    await refused('POST', AGENT_PATHS.jwtSvid, { entryId: 'e', audience: ['a'], ttl: 99999 }, 'ERR_FIELD_UNKNOWN', 'ttl');
    await refused('POST', AGENT_PATHS.decisions, { decisions: [], extra: 1 }, 'ERR_FIELD_UNKNOWN', 'extra');
    await refused('GET', '/v1/agents?all=1', undefined, 'ERR_FIELD_UNKNOWN', 'all');
    // A well-formed sync query is still answered.
    const ok = await call('GET', `${AGENT_PATHS.sync}?since=0&wait=0&bundles=&policy=0&quarantine=&lean=1`, { identity });
    assert.equal(ok.status, 200, ok.text);
  });
});

// ---------------------------------------------------------------- protocol versions (issue 16 §3)

describe('agent protocol versions', () => {
  it('an agent one version older (no writ-protocol header, a version-1 sync query) keeps syncing; every agent answer names the version the server speaks', async () => {
    const identity = await attest('older');
    const agentId = JSON.parse((await call('GET', '/v1/agents', { token: admin })).text).agents.find((a: { nodeName: string }) => a.nodeName === 'older')
      .spiffeId as string;
    const made = await call('POST', '/v1/entries', {
      token: admin,
      body: { spiffeId: 'spiffe://routes.test/older/web', parentId: agentId, selectors: ['unix:uid:1000'] },
    });
    assert.equal(made.status, 201, made.text);
    const entryId = JSON.parse(made.text).id as string;
    // Version 1: since, wait and bundles only (no lean, policy, quarantine or images), no header.
    const v1 = await call('GET', `${AGENT_PATHS.sync}?since=0&wait=0&bundles=`, { identity });
    assert.equal(v1.status, 200, v1.text);
    assert.equal(v1.headers[PROTOCOL_HEADER], String(PROTOCOL_VERSION));
    const a1 = JSON.parse(v1.text) as { entries: Array<{ id: string }>; bundle?: { keys: unknown[] }; full: boolean; revision: number };
    assert.deepEqual(
      a1.entries.map((e) => e.id),
      [entryId],
    );
    assert.equal(a1.full, true);
    assert.ok(a1.bundle && a1.bundle.keys.length > 0, 'an agent that does not ask lean gets the bundle every time');
    // The next poll of that agent, from the revision it has: nothing new, the bundle again.
    const again = JSON.parse((await call('GET', `${AGENT_PATHS.sync}?since=${a1.revision}&wait=0&bundles=`, { identity })).text) as typeof a1;
    assert.deepEqual(again.entries, []);
    assert.ok(again.bundle);
    // The current version says so; a garbled header is taken as version 1, never refused.
    for (const v of [String(PROTOCOL_VERSION), 'x', '0', '99999']) {
      const r = await call('GET', `${AGENT_PATHS.sync}?since=0&wait=0&bundles=&lean=1`, { identity, headers: { [PROTOCOL_HEADER]: v } });
      assert.equal(r.status, 200, `${v}: ${r.text}`);
      assert.equal(r.headers[PROTOCOL_HEADER], String(PROTOCOL_VERSION));
    }
    // The version-1 SVID request (a CSR for an entry) still signs.
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const csr = toPem('CERTIFICATE REQUEST', createCsr({ key: k.privateKey, keyType: 'ec-p256' }, k.publicKey));
    const svids = await call('POST', AGENT_PATHS.svids, { identity, body: { requests: [{ entryId, csr }] } });
    assert.equal(svids.status, 200, svids.text);
    assert.equal(svids.headers[PROTOCOL_HEADER], String(PROTOCOL_VERSION));
    // Routes other than the agent's carry no protocol header.
    assert.equal((await call('GET', '/livez')).headers[PROTOCOL_HEADER], undefined);
  });
});

// ---------------------------------------------------------------- admitted images (identity follows image trust)

describe('admitted images in the agent sync', () => {
  it('a new agent gets the set, a waiting one is woken by the write with only the new digest, one that does not ask gets none', {
    timeout: 30_000,
  }, async () => {
    const identity = await attest('images');
    const sync = async (q: string) => {
      const r = await call('GET', `${AGENT_PATHS.sync}?${q}`, { identity });
      assert.equal(r.status, 200, r.text);
      return JSON.parse(r.text) as Record<string, unknown> & {
        revision: number;
        bundlesVersion: string;
        quarantine: { version: string };
        admittedImages?: { version: string; full: boolean; digests: string[] };
      };
    };
    const d1 = `sha256:${'1'.repeat(64)}`;
    const d2 = `sha256:${'2'.repeat(64)}`;
    await srv.store.recordAdmittedImages([d1], Date.now());
    const first = await sync('since=0&wait=0&lean=1&images=');
    assert.deepEqual(first.admittedImages?.digests, [d1]);
    assert.equal(first.admittedImages?.full, true);
    assert.equal(first.requireAdmittedImage, undefined, 'the server does not require it of every entry');
    const v = first.admittedImages!.version;
    const current = `since=${first.revision}&bundles=${encodeURIComponent(first.bundlesVersion)}&quarantine=${first.quarantine.version}&lean=1`;
    const none = await sync(`${current}&wait=0&images=${v}`);
    assert.ok(!('admittedImages' in none), 'an agent at the current version gets nothing: the answer stays lean');
    // The change stamp stands still, so the once-a-second look for other replicas' writes sees
    // nothing: only this replica's own write can wake the poll before its 60 s are up.
    const store = srv.store as { changeStamp: typeof srv.store.changeStamp };
    const realStamp = store.changeStamp;
    const frozen = await realStamp.call(srv.store, Date.now());
    store.changeStamp = async () => frozen;
    // The poll's acknowledgement is written once it arrived: proof that it waits before the write.
    const acked = new Promise<void>((resolve) => {
      const real = srv.store.ackPolicies.bind(srv.store);
      (srv.store as { ackPolicies: typeof real }).ackPolicies = (batch) => (resolve(), real(batch));
    });
    const waiting = sync(`${current}&wait=60&images=${v}&policy=0`);
    await acked;
    await srv.store.recordAdmittedImages([d1, d2], Date.now());
    const woken = await waiting;
    store.changeStamp = realStamp;
    assert.deepEqual(woken.admittedImages, { version: woken.admittedImages!.version, full: false, digests: [d2] });
    const old = await sync('since=0&wait=0&lean=1');
    assert.ok(!('admittedImages' in old), 'an agent that does not ask for images (an older one) gets none');
    const bad = await call('GET', `${AGENT_PATHS.sync}?since=0&wait=0&images=${'9'.repeat(41)}`, { identity });
    assert.equal(bad.status, 400);
    assert.equal(JSON.parse(bad.text).field, 'images');
    const garbage = await sync('since=0&wait=0&lean=1&images=not-a-version');
    assert.equal(garbage.admittedImages?.full, true, 'a version the server never issued gets the whole set');
  });

  it('GET /v1/admission/images lists them in order, pages, answers one digest, and refuses a malformed one', async () => {
    const page = async (q: string) => {
      const r = await call('GET', `/v1/admission/images?${q}`, { token: admin });
      return { status: r.status, body: JSON.parse(r.text) as { images: Array<{ digest: string }>; nextPageToken?: string; code?: string; field?: string } };
    };
    const all = await page('');
    assert.ok(all.body.images.length >= 2);
    const p1 = await page('pageSize=1');
    assert.equal(p1.body.images.length, 1);
    const p2 = await page(`pageSize=1&pageToken=${p1.body.nextPageToken}`);
    assert.equal(p2.body.images[0]!.digest, all.body.images[1]!.digest);
    const one = await page(`digest=${all.body.images[1]!.digest}`);
    assert.deepEqual(
      one.body.images.map((i) => i.digest),
      [all.body.images[1]!.digest],
    );
    assert.deepEqual((await page(`digest=sha256:${'f'.repeat(64)}`)).body.images, []);
    const bad = await page('digest=sha256:XYZ');
    assert.deepEqual([bad.status, bad.body.code, bad.body.field], [400, 'ERR_FIELD_INVALID', 'digest']);
    const badToken = await page('pageToken=abc');
    assert.deepEqual([badToken.status, badToken.body.code], [400, 'ERR_PAGE_TOKEN_INVALID']);
    const anon = await call('GET', '/v1/admission/images');
    assert.equal(anon.status, 401);
  });
});

// ---------------------------------------------------------------- one change, many agents

// Last: the policy it applies would answer the other tests' polls at policy=0 at once.
describe('one change answered to many agents', () => {
  it('a policy apply reaches a lean agent without the bundle, an older one with it, and one with a new entry with that entry', async () => {
    const agents = await Promise.all(['fan-lean', 'fan-full', 'fan-entry'].map(attest));
    const [lean, full, withEntry] = agents as [(typeof agents)[number], (typeof agents)[number], (typeof agents)[number]];
    type Answer = {
      revision: number;
      bundlesVersion: string;
      quarantine: { version: string };
      entries: Array<{ spiffeId: string }>;
      bundle?: unknown;
      policy?: { revision: number };
    };
    const sync = async (identity: { cert: string; key: string }, q: string): Promise<Answer> => {
      const r = await call('GET', `${AGENT_PATHS.sync}?${q}`, { identity });
      assert.equal(r.status, 200, r.text);
      return JSON.parse(r.text) as Answer;
    };
    const first = await sync(lean, 'since=0&wait=0&lean=1&policy=0');
    const entryAgent = JSON.parse((await call('GET', '/v1/agents', { token: admin })).text).agents.find((a: { nodeName: string }) => a.nodeName === 'fan-entry')
      .spiffeId as string;
    const made = await call('POST', '/v1/entries', {
      token: admin,
      body: { spiffeId: 'spiffe://routes.test/fan/web', parentId: entryAgent, selectors: ['unix:uid:1001'] },
    });
    assert.equal(made.status, 201, made.text);
    const at = (lean: boolean) =>
      `since=${first.revision}&wait=30&bundles=${encodeURIComponent(first.bundlesVersion)}&quarantine=${first.quarantine.version}&policy=${first.policy?.revision ?? 0}${lean ? '&lean=1' : ''}`;
    // Whether the polls wait before the apply or arrive after it, each must get the new policy.
    const answers = Promise.all([sync(lean, at(true)), sync(full, at(false)), sync(withEntry, at(true))]);
    const yaml = `apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: fan }\nspec:\n  to: spiffe://routes.test/fan/web\n  rules: [{ effect: allow, from: ["spiffe://routes.test/**"] }]\n`;
    const applied = await call('POST', '/v1/policies', { token: admin, body: { yaml } });
    assert.equal(applied.status < 300, true, applied.text);
    const [l, f, e] = await answers;
    for (const a of [l, f]) {
      assert.ok(a.policy && a.policy.revision > (first.policy?.revision ?? 0), 'the new policy');
      assert.deepEqual(a.entries, [], 'an agent without entries of its own gets none');
    }
    assert.equal(l.bundle, undefined, 'the lean agent gets no bundle it has');
    assert.ok(f.bundle, 'the agent that does not ask lean gets the bundle');
    assert.deepEqual(
      e.entries.map((x) => x.spiffeId),
      ['spiffe://routes.test/fan/web'],
      "the entry's agent gets its entry",
    );
  });
});
