/**
 * Failover between server replicas over real HTTPS: a refused port, a replica that is draining
 * (503 ERR_SERVER_DRAINING), and one that answers; each pinned to the server ID, the same request
 * moved on, the answering one kept, and a refusal that is the server's own answer not retried.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { WritError } from '@writ/spiffe';
import { FailoverClient } from './failover-client.ts';
import { csrFor, generateKey, keyPem } from './keys.ts';
import { serverUrls } from './agent.ts';
import { ServerClient } from './server-client.ts';
import { FakeCa } from './testing/fake-server.ts';

const ca = new FakeCa('fo.test');
const SERVER_ID = 'spiffe://fo.test/writ/server';

interface Replica {
  server: Server;
  url: string;
  hits: string[];
  answer: { status: number; body: unknown };
  /** Answers given first, one per request, before `answer`. */
  first: Array<{ status: number; body: unknown }>;
}

async function replica(spiffeId = SERVER_ID): Promise<Replica> {
  const k = generateKey();
  const cert = ca.sign(spiffeId, csrFor(k), 3600_000, ['localhost']);
  const r: Replica = { server: undefined as unknown as Server, url: '', hits: [], answer: { status: 200, body: { ok: true } }, first: [] };
  r.server = createServer({ key: keyPem(k.key), cert }, (req, res) => {
    r.hits.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => {
      const a = r.first.shift() ?? r.answer;
      res.writeHead(a.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(a.body));
    });
  });
  await new Promise<void>((ok) => r.server.listen(0, '127.0.0.1', () => ok()));
  r.url = `https://localhost:${(r.server.address() as { port: number }).port}`;
  return r;
}

describe('failover between server replicas', () => {
  let draining: Replica;
  let good: Replica;
  let impostor: Replica;
  let refusedUrl: string;
  const clients: FailoverClient[] = [];
  const failover = (urls: string[]): FailoverClient => {
    const c = new FailoverClient(
      urls.map((u) => {
        const client = new ServerClient(u, ca.pem, SERVER_ID);
        return { client, name: client.origin };
      }),
      pino({ level: 'silent' }),
    );
    clients.push(c);
    return c;
  };

  before(async () => {
    draining = await replica();
    draining.answer = { status: 503, body: { code: 'ERR_SERVER_DRAINING', message: 'stopping' } };
    good = await replica();
    impostor = await replica('spiffe://fo.test/ns/web');
    const gone = await replica();
    refusedUrl = gone.url;
    await new Promise<void>((ok) => gone.server.close(() => ok()));
  });
  after(() => {
    for (const c of clients) c.close();
    for (const r of [draining, good, impostor]) r.server.close();
  });

  it('a refused replica, a draining one and one presenting another ID are passed over; the answering one is kept for later requests', async () => {
    const c = failover([refusedUrl, draining.url, impostor.url, good.url]);
    assert.deepEqual(await c.call('GET', '/v1/agent/sync?since=4'), { ok: true });
    assert.equal(c.current, new URL(good.url).origin);
    assert.deepEqual(draining.hits, ['GET /v1/agent/sync?since=4'], 'the same request, with the same revision, went on');
    assert.deepEqual(impostor.hits, [], 'nothing is sent to a peer that is not the pinned server');
    assert.deepEqual(await c.call('POST', '/v1/agent/svids', { csr: 'x' }), { ok: true });
    assert.equal(draining.hits.length, 1, 'the next request went straight to the current replica');
    assert.equal(good.hits.length, 2);
  });

  it("a refusal that is the server's answer (a 4xx code) is not retried elsewhere", async () => {
    const c = failover([good.url, draining.url]);
    good.answer = { status: 403, body: { code: 'ERR_FORBIDDEN', message: 'banned' } };
    const before = draining.hits.length;
    await assert.rejects(c.call('GET', '/v1/agent/sync'), (e) => e instanceof WritError && e.code === 'ERR_FORBIDDEN');
    assert.equal(draining.hits.length, before);
    good.answer = { status: 200, body: { ok: true } };
  });

  it('when no replica answers, the last failure is the error (the sync loop backs off), and the next call starts over', async () => {
    const c = failover([refusedUrl, draining.url]);
    await assert.rejects(c.call('GET', '/v1/agent/sync'), (e) => e instanceof WritError && e.code === 'ERR_SERVER_DRAINING');
    draining.answer = { status: 200, body: { back: true } };
    assert.deepEqual(await c.call('GET', '/v1/agent/sync'), { back: true });
    draining.answer = { status: 503, body: { code: 'ERR_SERVER_DRAINING', message: 'stopping' } };
  });

  it('the survivor of a failover answering that its database is busy, the other replica dead: asked again after a pause, and the request succeeds', async () => {
    const busy = await replica();
    try {
      busy.first.push({
        status: 503,
        body: { code: 'ERR_STORE_UNAVAILABLE', message: 'the database is unavailable (timeout exceeded when trying to connect)' },
      });
      busy.answer = { status: 200, body: { minted: true } };
      const c = failover([busy.url, refusedUrl]);
      assert.deepEqual(await c.call('POST', '/v1/agent/jwt-svids', { audience: ['a'] }), { minted: true });
      assert.equal(busy.hits.length, 2, 'the busy replica, then (the dead one refused) the busy one again');
      assert.equal(c.current, new URL(busy.url).origin);
    } finally {
      busy.server.close();
    }
  });

  it('--server lists: repeated or comma-separated, each an https URL', () => {
    assert.deepEqual(serverUrls('https://a:1, https://b:2,'), ['https://a:1', 'https://b:2']);
    assert.throws(() => serverUrls('https://a:1,http://b:2'), /must be an https/);
    assert.throws(() => serverUrls(' , '), /give the server URL/);
  });
});
