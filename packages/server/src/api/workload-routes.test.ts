/**
 * POST /v1/agent/workloads and GET /v1/workloads against a real server in this process (real TLS,
 * real agent SVIDs, SQLite, an `owners` config): owners resolved, each agent's list its own, a bad
 * report refused naming the field with nothing stored, bad queries refused.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { createCsr, toPem } from '@writ/spiffe';
import { AGENT_PATHS, type WorkloadReport } from '@writ/protocol';
import { loadServerConfig } from '../config.ts';
import { startServer, type RunningServer } from '../server.ts';

let dir: string;
let srv: RunningServer;
let caPem: string;
let admin: string;
type Identity = { cert: string; key: string };
/** The fields these tests read from answers. */
interface Answer {
  code?: string;
  field?: string;
  token?: string;
  svid?: string;
  owner?: string;
  workloads: Array<Record<string, unknown>>;
  truncated?: boolean;
}

function call(method: string, path: string, opts: { body?: unknown; token?: string; identity?: Identity } = {}): Promise<{ status: number; json: Answer }> {
  const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, srv.url),
      {
        method,
        ca: caPem,
        ...(opts.identity ?? {}),
        headers: {
          ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
          ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
        },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: (text ? JSON.parse(text) : {}) as Answer }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

async function attest(node: string): Promise<Identity> {
  const tok = (await call('POST', '/v1/join-tokens', { body: { nodeName: node }, token: admin })).json.token as string;
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csr = toPem('CERTIFICATE REQUEST', createCsr({ key: k.privateKey, keyType: 'ec-p256' }, k.publicKey));
  const r = await call('POST', AGENT_PATHS.attestJoinToken, { body: { joinToken: tok, csr } });
  assert.equal(r.status, 201, JSON.stringify(r.json));
  return { cert: r.json.svid as string, key: k.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
}

const D = `sha256:${'e'.repeat(64)}`;
const w = (key: string, over: Partial<WorkloadReport> = {}): WorkloadReport => ({
  key,
  spiffeIds: ['spiffe://wl.test/shop/web'],
  containerId: null,
  containerName: 'web',
  podUid: null,
  podName: `pod-${key}`,
  namespace: 'shop',
  podOwner: 'ReplicaSet/web-1',
  imageDigest: D,
  imageName: 'reg.example/shop/web',
  labels: {},
  annotations: {},
  ...over,
});
const running = async (q = ''): Promise<Array<Record<string, unknown>>> => {
  const r = await call('GET', `/v1/workloads${q}`, { token: admin });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  return r.json.workloads;
};

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-workload-routes-'));
  writeFileSync(join(dir, 'writ.yaml'), 'owners:\n  annotations: [example.com/owner]\n  namespaces: { shop: team-shop }\n');
  srv = await startServer(loadServerConfig({ trustDomain: 'wl.test', dataDir: dir, listen: '127.0.0.1:0', config: join(dir, 'writ.yaml') }), {
    log: pino({ level: 'silent' }),
  });
  caPem = readFileSync(join(dir, 'bundle.pem'), 'utf8');
  admin = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
});
after(async () => {
  await srv.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('POST /v1/agent/workloads', () => {
  it("resolves owners (entry owner, default label keys, the config's annotation keys and namespace map); each agent replaces only its own list", async () => {
    const a = await attest('wl-a');
    const b = await attest('wl-b');
    const e = await call('POST', '/v1/entries', {
      token: admin,
      body: { spiffeId: 'spiffe://wl.test/shop/api', parentId: 'spiffe://wl.test/writ/agent/wl-a', selectors: ['k8s:ns:shop'], owner: 'api-team' },
    });
    assert.equal(e.status, 201, JSON.stringify(e.json));
    assert.equal(e.json.owner, 'api-team');
    const report = {
      workloads: [
        w('api', { spiffeIds: ['spiffe://wl.test/shop/api'], labels: { team: 'payments' } }),
        w('labelled', { labels: { 'app.kubernetes.io/part-of': 'checkout' } }),
        w('annotated', { annotations: { 'example.com/owner': 'ops' } }),
        w('plain'),
        w('elsewhere', { namespace: 'other' }),
      ],
    };
    const r = await call('POST', AGENT_PATHS.workloads, { identity: a, body: report });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.deepEqual(r.json, { workloads: 5, started: 5, ended: 0 });
    assert.equal((await call('POST', AGENT_PATHS.workloads, { identity: b, body: { workloads: [w('b1')] } })).status, 200);
    const owners = Object.fromEntries((await running()).map((x) => [x['key'], [x['owner'], x['node'], x['agentId']]]));
    assert.deepEqual(owners, {
      api: ['api-team', 'wl-a', 'spiffe://wl.test/writ/agent/wl-a'],
      labelled: ['checkout', 'wl-a', 'spiffe://wl.test/writ/agent/wl-a'],
      annotated: ['ops', 'wl-a', 'spiffe://wl.test/writ/agent/wl-a'],
      plain: ['team-shop', 'wl-a', 'spiffe://wl.test/writ/agent/wl-a'],
      elsewhere: [null, 'wl-a', 'spiffe://wl.test/writ/agent/wl-a'],
      b1: ['team-shop', 'wl-b', 'spiffe://wl.test/writ/agent/wl-b'],
    });

    // A shorter list from agent a ends what it left out; agent b's stays.
    assert.deepEqual((await call('POST', AGENT_PATHS.workloads, { identity: a, body: { workloads: [w('plain')] } })).json, {
      workloads: 1,
      started: 0,
      ended: 4,
    });
    assert.deepEqual((await running()).map((x) => x['key']).sort(), ['b1', 'plain']);
    const all = await running('?running=false');
    assert.equal(all.length, 6);
    assert.equal(all.find((x) => x['key'] === 'api')!['running'], false);
    assert.ok(all.find((x) => x['key'] === 'api')!['endedAt']);

    // Filters.
    assert.deepEqual((await running(`?image=${D}&spiffeId=${encodeURIComponent('spiffe://wl.test/shop/web')}`)).length, 2);
    assert.deepEqual(await running(`?image=sha256:${'0'.repeat(64)}`), []);
    const limited = await call('GET', '/v1/workloads?running=false&limit=2', { token: admin });
    assert.deepEqual([limited.json.workloads.length, limited.json.truncated], [2, true]);
  });

  it('refuses a bad report naming the field, and stores nothing of it', async () => {
    const a = await attest('wl-c');
    assert.equal((await call('POST', AGENT_PATHS.workloads, { identity: a, body: { workloads: [w('c1')] } })).status, 200);
    for (const [body, field] of [
      [{ workloads: [w('c2'), w('c3', { imageDigest: 'latest' })] }, 'workloads[1].imageDigest'],
      [{ workloads: [w('c2'), w('c2')] }, 'workloads[1].key'],
      [{ workloads: [{ ...w('c2'), spiffeIds: ['not-an-id'] }] }, 'workloads[0].spiffeIds[0]'],
      [{ workloads: [w('c2', { labels: { team: 5 as unknown as string } })] }, 'workloads[0].labels.team'],
      [{ workloads: 'all' }, 'workloads'],
    ] as const) {
      const r = await call('POST', AGENT_PATHS.workloads, { identity: a, body });
      assert.equal(r.status, 400, JSON.stringify(r.json));
      assert.deepEqual([r.json.code, r.json.field], ['ERR_FIELD_INVALID', field]);
    }
    const extra = await call('POST', AGENT_PATHS.workloads, { identity: a, body: { workloads: [], more: true } });
    assert.deepEqual([extra.status, extra.json.code], [400, 'ERR_FIELD_UNKNOWN']);
    const mine = (await running()).filter((x) => x['agentId'] === 'spiffe://wl.test/writ/agent/wl-c');
    assert.deepEqual(
      mine.map((x) => x['key']),
      ['c1'],
      'c1 still running, none of the refused ones stored',
    );
  });

  it('only an agent may report; an operator token or no identity is refused', async () => {
    assert.equal((await call('POST', AGENT_PATHS.workloads, { token: admin, body: { workloads: [] } })).status, 401);
    assert.equal((await call('POST', AGENT_PATHS.workloads, { body: { workloads: [] } })).status, 401);
  });
});

describe('GET /v1/workloads', () => {
  it('refuses bad parameters naming them', async () => {
    for (const [q, field] of [
      ['?running=yes', 'running'],
      ['?image=sha256:xyz', 'image'],
      ['?spiffeId=web', 'spiffeId'],
      ['?limit=0', 'limit'],
      ['?owner=x', 'owner'],
    ]) {
      const r = await call('GET', `/v1/workloads${q}`, { token: admin });
      assert.equal(r.status, 400, `${q}: ${JSON.stringify(r.json)}`);
      assert.equal(r.json.field, field, q);
    }
    assert.equal((await call('GET', '/v1/workloads')).status, 401);
  });
});
