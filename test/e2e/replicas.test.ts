/**
 * Two real `writ server` processes on one PostgreSQL database (issue 16, replicas): a change made
 * through one reaches agents synced through the other by NOTIFY, and still when the LISTEN
 * connection is killed; a run-once job moves when its lease holder is killed; and kill -9 of a
 * replica while 100 agents sync and a workload fetches SVIDs through a real agent loses no
 * Workload API call and no acknowledged write.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent as HttpsAgent, request } from 'node:https';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { AGENT_PATHS, encodeSyncQuery } from '@writ/protocol';
import { WorkloadClient } from '@writ/sdk';
import { createCsr, toPem } from '@writ/spiffe';
import { cleanup, startAgentProcess, startServerProcess, waitFor, type AgentProcess, type ServerProcess } from './helpers.ts';

const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const SIM_AGENTS = Number(process.env['WRIT_TEST_SIM_AGENTS'] ?? 100);

async function admin<T>(fn: (c: pg.Client) => Promise<T>, db?: string): Promise<T> {
  const u = new URL(PG_URL);
  if (db) u.pathname = `/${db}`;
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** An HTTPS JSON call; with `cert`, as an agent (mTLS). Resolves the status and the JSON. */
function call(
  url: string,
  ca: string,
  method: string,
  path: string,
  o: { body?: unknown; token?: string; agent?: HttpsAgent } = {},
): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const payload = o.body === undefined ? undefined : JSON.stringify(o.body);
    const req = request(
      new URL(path, url),
      {
        method,
        agent: o.agent ?? new HttpsAgent({ ca }),
        timeout: 60_000,
        headers: { ...(payload ? { 'content-type': 'application/json' } : {}), ...(o.token ? { authorization: `Bearer ${o.token}` } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const t = Buffer.concat(chunks).toString();
          resolve({ status: res.statusCode ?? 0, json: t ? (JSON.parse(t) as Record<string, unknown>) : {} });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

describe('two server replicas on one PostgreSQL database', { timeout: 600_000 }, () => {
  const dbName = `writ_replicas_${process.pid}`;
  let dbUrl: string;
  let a: ServerProcess;
  let b: ServerProcess;
  let ca: string;
  let token: string;
  const sims: Array<{ destroy(): void }> = [];
  let realAgent: AgentProcess | undefined;

  let adminAgent: HttpsAgent;
  const api = async (srv: ServerProcess, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const r = await call(srv.url, ca, method, path, { body, token, agent: adminAgent });
    assert.ok(r.status < 300, `${method} ${path} via ${srv.url}: ${r.status} ${JSON.stringify(r.json)}`);
    return r.json;
  };
  const joinToken = async (srv: ServerProcess, node: string): Promise<string> =>
    (await api(srv, 'POST', '/v1/join-tokens', { nodeName: node }))['token'] as string;
  const serverIdOf = (srv: ServerProcess): string => readFileSync(join(srv.dataDir, 'server.id'), 'utf8').trim();
  const leaseHolder = async (name: string): Promise<string | undefined> =>
    admin(async (c) => (await c.query('SELECT holder FROM leases WHERE name = $1', [name])).rows[0]?.['holder'] as string | undefined, dbName);

  /** A minimal agent of its own: attested through `via`, then long polls on `pollOn`, answers timed. */
  const rawAgent = async (via: ServerProcess, node: string) => {
    const jt = await joinToken(via, node);
    const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const csr = toPem('CERTIFICATE REQUEST', createCsr({ key: kp.privateKey, keyType: 'ec-p256' }, kp.publicKey));
    const att = await call(via.url, ca, 'POST', AGENT_PATHS.attestJoinToken, { body: { joinToken: jt, csr } });
    assert.ok(att.status < 300, JSON.stringify(att.json));
    const cert = att.json['svid'] as string;
    const key = kp.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    const agent = new HttpsAgent({ ca, cert, key, keepAlive: true });
    sims.push(agent);
    let state = { since: 0, bundles: '', policy: 0, quarantine: '' };
    return {
      get policy(): number {
        return state.policy;
      },
      close: () => agent.destroy(),
      /** One sync poll on `srv` (waiting up to `wait` s); the answer, and when it came. */
      async poll(srv: ServerProcess, wait: number): Promise<{ at: number; json: Record<string, unknown> }> {
        const q = encodeSyncQuery({ ...state, wait, lean: true });
        const r = await call(srv.url, ca, 'GET', `${AGENT_PATHS.sync}?${q}`, { agent });
        const at = performance.now();
        assert.equal(r.status, 200, JSON.stringify(r.json));
        const pol = r.json['policy'] as { revision: number } | undefined;
        state = {
          since: r.json['revision'] as number,
          bundles: r.json['bundlesVersion'] as string,
          policy: pol?.revision ?? state.policy,
          quarantine: (r.json['quarantine'] as { version: string }).version,
        };
        return { at, json: r.json };
      },
    };
  };

  before(async () => {
    await admin((c) => c.query(`CREATE DATABASE ${dbName}`));
    const u = new URL(PG_URL);
    u.pathname = `/${dbName}`;
    dbUrl = u.toString();
    a = await startServerProcess({ args: ['--db', dbUrl] });
    b = await startServerProcess({ args: ['--db', dbUrl] });
    // B started second: the bundle.pem it wrote at start has both replicas' CAs (A's file catches up later).
    ca = readFileSync(join(b.dataDir, 'bundle.pem'), 'utf8');
    assert.equal(ca.match(/BEGIN CERTIFICATE/g)?.length, 2, "both replicas' CAs in B's bundle");
    token = a.adminToken;
    adminAgent = new HttpsAgent({ ca, keepAlive: true });
  });
  after(async () => {
    adminAgent?.destroy();
    for (const s of sims) s.destroy();
    await realAgent?.stop();
    // A replica killed with SIGKILL has exited already: stop() would wait for an exit that came.
    for (const s of [a, b]) if (s && s.child.exitCode === null && s.child.signalCode === null) await s.stop();
    for (const s of [a, b]) if (s) cleanup(s.dataDir);
    await admin((c) => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`));
  });

  it('a change made through replica A reaches an agent waiting on replica B by notification, well under the 1 s poll', async () => {
    const sim = await rawAgent(a, 'sim-prop');
    await sim.poll(b, 0); // the full sync
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const waiting = sim.poll(b, 25);
      await new Promise((r) => setTimeout(r, 300)); // the poll is waiting on B
      const t0 = performance.now();
      await api(a, 'POST', '/v1/quarantine', { spiffeId: `spiffe://e2e.test/prop/${i}`, reason: 'replicas test' });
      const got = await waiting;
      assert.ok((got.json['quarantine'] as { ids: string[] }).ids.includes(`spiffe://e2e.test/prop/${i}`));
      times.push(got.at - t0);
    }
    times.sort((x, y) => x - y);
    console.log(`   A -> agent on B: ${times.map((t) => t.toFixed(0)).join(', ')} ms (quarantine add; B's poll would take up to 1000 ms)`);
    assert.ok(
      b.logs.some((l) => l.includes("listening for other replicas' changes")),
      'B listens',
    );
  });

  it('an agent renewed through B: A refuses its old SVID as soon as it hears (A checks agents from memory), takes the new one, and refuses it once B evicts the agent', async () => {
    const jt = await joinToken(b, 'sim-renew');
    const identity = () => {
      const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      return { kp, csr: toPem('CERTIFICATE REQUEST', createCsr({ key: kp.privateKey, keyType: 'ec-p256' }, kp.publicKey)) };
    };
    const first = identity();
    const att = await call(b.url, ca, 'POST', AGENT_PATHS.attestJoinToken, { body: { joinToken: jt, csr: first.csr } });
    assert.ok(att.status < 300, JSON.stringify(att.json));
    const tls = (cert: string, key: KeyObject) => {
      const agent = new HttpsAgent({ ca, cert, key: key.export({ format: 'pem', type: 'pkcs8' }) as string, keepAlive: true });
      sims.push(agent);
      return agent;
    };
    const oldTls = tls(att.json['svid'] as string, first.kp.privateKey);
    const syncOn = async (srv: ServerProcess, agent: HttpsAgent) => (await call(srv.url, ca, 'GET', `${AGENT_PATHS.sync}?since=0&wait=0`, { agent })).status;
    // Twice on A: the second from the record A read for the first.
    for (const _ of [1, 2]) assert.equal(await syncOn(a, oldTls), 200);
    const second = identity();
    const renewed = await call(b.url, ca, 'POST', AGENT_PATHS.renew, { body: { csr: second.csr }, agent: oldTls });
    assert.equal(renewed.status, 200, JSON.stringify(renewed.json));
    const t0 = performance.now();
    await waitFor('A to refuse the superseded SVID', async () => ((await syncOn(a, oldTls)) === 401 ? true : undefined), 5_000);
    console.log(`   superseded SVID refused on A ${(performance.now() - t0).toFixed(0)} ms after B renewed it`);
    const newTls = tls(renewed.json['svid'] as string, second.kp.privateKey);
    for (const _ of [1, 2]) assert.equal(await syncOn(a, newTls), 200);
    await api(b, 'POST', `/v1/agents/${encodeURIComponent(att.json['spiffeId'] as string)}/evict`);
    await waitFor('A to refuse the evicted agent', async () => ((await syncOn(a, newTls)) === 401 ? true : undefined), 5_000);
  });

  it('the LISTEN connections killed: a change made meanwhile still arrives, and LISTEN comes back', async () => {
    const sim = await rawAgent(a, 'sim-listen');
    await sim.poll(b, 0);
    const waiting = sim.poll(b, 25);
    await new Promise((r) => setTimeout(r, 300));
    const killed = await admin(
      async (c) =>
        (await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'writ-listen %' AND datname = $1", [dbName])).rows
          .length,
    );
    assert.equal(killed, 2, "both replicas' listeners");
    const t0 = performance.now();
    await api(a, 'POST', '/v1/quarantine', { spiffeId: 'spiffe://e2e.test/listen-lost', reason: 'replicas test' });
    const got = await waiting;
    assert.ok((got.json['quarantine'] as { ids: string[] }).ids.includes('spiffe://e2e.test/listen-lost'));
    console.log(`   with LISTEN killed: arrived in ${(got.at - t0).toFixed(0)} ms`);
    await waitFor('B to log the loss and the return of LISTEN', async () => {
      const lost = b.logs.findIndex((l) => l.includes('lost the change notification connection'));
      return lost >= 0 && b.logs.slice(lost).some((l) => l.includes("listening for other replicas' changes")) ? true : undefined;
    });
    // Back: a change arrives by notification again.
    const again = sim.poll(b, 25);
    await new Promise((r) => setTimeout(r, 300));
    await api(a, 'POST', '/v1/quarantine', { spiffeId: 'spiffe://e2e.test/listen-back', reason: 'replicas test' });
    assert.ok(((await again).json['quarantine'] as { ids: string[] }).ids.includes('spiffe://e2e.test/listen-back'));
  });

  it('a replica frozen (SIGSTOP) holding a write transaction open: PostgreSQL ends that transaction, and the other replica writes again while it is still frozen', async () => {
    // Writes through A only, several at once, until A is frozen while one of them holds the entry revision counter.
    let stopA = false;
    let k = 0;
    const writer = new HttpsAgent({ ca, keepAlive: true });
    const entry = (i: number): { spiffeId: string; parentId: string; selectors: string[] } => ({
      spiffeId: `spiffe://e2e.test/frozen/${i}`,
      parentId: 'spiffe://e2e.test/writ/agent/nowhere',
      selectors: ['unix:uid:1'],
    });
    const aWrites = Array.from({ length: 3 }, async () => {
      while (!stopA) await call(a.url, ca, 'POST', '/v1/entries', { token, agent: writer, body: entry(k++) }).catch(() => undefined);
    });
    /** Whether the entry revision counter is locked by an open transaction now (NOWAIT: fails at once if so). */
    const counterLocked = (): Promise<boolean> =>
      admin(
        (c) =>
          c.query("BEGIN; SELECT value FROM counters WHERE name = 'entry_revision' FOR UPDATE NOWAIT; ROLLBACK").then(
            () => false,
            async (err: { code?: string }) => (await c.query('ROLLBACK'), err.code === '55P03'),
          ),
        dbName,
      );
    // A replica's connections that hold a transaction open between statements.
    const idleInTransaction = () =>
      admin(
        async (c) =>
          (
            await c.query("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND state = 'idle in transaction' AND application_name LIKE 'writ-server %'", [
              dbName,
            ])
          ).rows as Array<{ pid: number }>,
        dbName,
      );
    let frozenPid: number | undefined;
    try {
      for (let attempt = 0; attempt < 200 && frozenPid === undefined; attempt++) {
        const open = await idleInTransaction();
        if (!open.length) continue;
        a.child.kill('SIGSTOP');
        const holder = await idleInTransaction();
        if (holder.length && (await counterLocked())) frozenPid = holder[0]!.pid;
        else a.child.kill('SIGCONT');
      }
      assert.ok(frozenPid !== undefined, 'A frozen while a write of its holds the entry revision counter');
      // B's write waits on that lock; it goes through once PostgreSQL has ended the frozen transaction
      // (a lock wait over its lock_timeout answers 503, and is tried again).
      const statuses: number[] = [];
      let pending: Promise<number> | undefined;
      await waitFor(
        'a write through B while A is frozen',
        async () => {
          // One write at a time, each given 10 s: a write that never ends fails the wait, not the run.
          if (statuses.includes(201)) return true;
          if (pending) return undefined;
          pending = call(b.url, ca, 'POST', '/v1/entries', { token, agent: adminAgent, body: entry(100_000 + statuses.length) }).then((r) => {
            statuses.push(r.status);
            pending = undefined;
            return r.status;
          });
          const status = await Promise.race([pending, new Promise((r) => setTimeout(r, 10_000, 0))]);
          return status === 201 ? true : undefined;
        },
        60_000,
      );
      assert.deepEqual(
        statuses.filter((s) => s !== 201 && s !== 503),
        [],
        `while A is frozen B answers 201, or 503 while the lock is held: ${statuses.join(', ')}`,
      );
      const stillThere = await admin(async (c) => (await c.query('SELECT pid FROM pg_stat_activity WHERE pid = $1', [frozenPid])).rows.length, dbName);
      assert.equal(stillThere, 0, "PostgreSQL ended the frozen replica's idle transaction");
      assert.equal(a.child.signalCode, null, 'A is still there (stopped, not dead)');
    } finally {
      a.child.kill('SIGCONT');
      stopA = true;
      await Promise.all(aWrites);
    }
    // Thawed, A finds its connection ended, says so, and writes again.
    await waitFor('a write through A after SIGCONT', async () =>
      (await call(a.url, ca, 'POST', '/v1/entries', { token, agent: writer, body: entry(200_000) }).catch(() => undefined))?.status === 201 ? true : undefined,
    );
    assert.ok(
      a.logs.some((l) => l.includes('"code":"25P03"') && l.includes('database connection lost')),
      'A logs that its idle transaction was ended',
    );
    writer.destroy();
  });

  it('the holder of the quarantine-expiry lease killed with SIGKILL: the other takes the lease and runs the job within seconds', async () => {
    const holderId = await waitFor('a holder', () => leaseHolder('quarantine-expiry'));
    const [holder, other] = holderId === serverIdOf(a) ? [a, b] : [b, a];
    assert.equal(holderId, serverIdOf(holder));
    const sim = await rawAgent(other, 'sim-lease');
    // A quarantine that ends 3 s from now: only the job tells the hubs (no write ends it, and they poll nothing while LISTEN is up).
    await api(other, 'POST', '/v1/quarantine', { spiffeId: 'spiffe://e2e.test/lease/short', reason: 'replicas test', ttl: '3s' });
    const first = await sim.poll(other, 0);
    assert.ok((first.json['quarantine'] as { ids: string[] }).ids.includes('spiffe://e2e.test/lease/short'));
    const killedAt = performance.now();
    holder.child.kill('SIGKILL');
    const lifted = await (async () => {
      for (;;) {
        const r = await sim.poll(other, 25);
        if (!(r.json['quarantine'] as { ids: string[] }).ids.includes('spiffe://e2e.test/lease/short')) return r.at;
      }
    })();
    assert.equal(await leaseHolder('quarantine-expiry'), serverIdOf(other));
    console.log(`   expiry announced by the new holder ${((lifted - killedAt) / 1000).toFixed(1)} s after the kill (lease 6 s, quarantine ended at 3 s)`);
    assert.ok(other.logs.some((l) => l.includes('took the job lease') && l.includes('quarantine-expiry')));
    // The killed replica comes back (same data dir, so the same server ID and CA), for the next test.
    const back = await startServerProcess({ args: ['--db', dbUrl], dataDir: holder.dataDir });
    if (holder === a) a = back;
    else b = back;
  });

  it(`kill -9 of one replica while ${SIM_AGENTS} agents sync and a workload fetches SVIDs through a real agent: no failed call, every agent back through the other, no acknowledged write lost`, async () => {
    // The real agent (both URLs, A first), and its workload's entry.
    const uid = process.getuid!();
    const rt = await joinToken(a, 'real-node');
    await api(a, 'POST', '/v1/entries', {
      spiffeId: 'spiffe://e2e.test/failover/web',
      parentId: 'spiffe://e2e.test/writ/agent/real-node',
      selectors: [`unix:uid:${uid}`],
    });
    // Given B's bundle file (both CAs); A first in its list.
    realAgent = await startAgentProcess(b, { joinToken: rt, serverUrl: `${a.url},${b.url}` });
    const workload = new WorkloadClient(`unix://${realAgent.socket}`, { attempts: 1 });
    let why = '';
    await waitFor('the SVID', async () =>
      (await workload.fetchX509Context().catch((e: Error) => void (why = `${e.message}; agent: ${realAgent?.logs.slice(-5).join('\n')}`)))?.svids.length
        ? true
        : undefined,
    ).catch((e: Error) => assert.fail(`${e.message}: ${why}`));

    // The simulated agents: the sync protocol with their own SVIDs, half on A, half on B, each moving
    // to the other replica when its poll fails (what the agent's failover client does).
    interface Sim {
      agent: Awaited<ReturnType<typeof rawAgent>>;
      on: ServerProcess[];
      /** When it had the revision applied through B after the kill. */
      synced: number | undefined;
    }
    const simulated: Sim[] = [];
    for (let i = 0; i < SIM_AGENTS; i += 25)
      await Promise.all(
        Array.from({ length: Math.min(25, SIM_AGENTS - i) }, async (_, k) => {
          const n = i + k;
          const agent = await rawAgent(n % 2 ? b : a, `sim-${n}`);
          simulated.push({ agent, on: n % 2 ? [b, a] : [a, b], synced: undefined });
        }),
      );
    let killedAt = Number.POSITIVE_INFINITY;
    let rev1 = Number.POSITIVE_INFINITY;
    let stop = false;
    const simLoops = simulated.map(async (sim) => {
      let polls = 0;
      while (!stop) {
        try {
          const r = await sim.agent.poll(sim.on[0]!, polls++ === 0 ? 0 : 20);
          if (sim.agent.policy >= rev1) sim.synced ??= r.at;
        } catch {
          if (stop) return;
          sim.on.reverse();
        }
      }
    });
    await waitFor('every simulated agent synced once', async () => (simulated.every((x) => x.agent.policy >= 0) ? true : undefined));
    const yaml = (name: string): string =>
      `apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: ${name} }\nspec:\n  to: spiffe://e2e.test/failover/web\n  rules: [{ effect: allow, from: ["spiffe://e2e.test/**"] }]\n`;
    const rev0 = (await api(b, 'POST', '/v1/policies', { yaml: yaml('before-kill') }))['revision'] as number;
    await waitFor(`all agents at revision ${rev0}`, async () => (simulated.every((x) => x.agent.policy === rev0) ? true : undefined));

    // Load: the workload fetches X.509 and (a new audience each time: a server call) JWT-SVIDs; a writer creates entries on both.
    let calls = 0;
    let callsAfterKill = 0;
    const failures: string[] = [];
    const acknowledged: string[] = [];
    const writer = new HttpsAgent({ ca, keepAlive: true });
    const loads = [
      (async () => {
        for (let i = 0; !stop; i++) {
          try {
            const ctx = await workload.fetchX509Context();
            assert.equal(ctx.svids[0]?.spiffeId, 'spiffe://e2e.test/failover/web');
            const jwt = await workload.fetchJwtSvids([`aud-${i}`]);
            assert.equal(jwt.length, 1);
            calls += 2;
            if (performance.now() > killedAt) callsAfterKill += 2;
          } catch (err) {
            failures.push((err as Error).message);
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      })(),
      (async () => {
        for (let i = 0; !stop; i++) {
          const via = i % 2 ? b : a;
          const spiffeId = `spiffe://e2e.test/acked/${i}`;
          const r = await call(via.url, ca, 'POST', '/v1/entries', {
            token,
            agent: writer,
            body: { spiffeId, parentId: 'spiffe://e2e.test/writ/agent/nowhere', selectors: [`unix:uid:${i}`] },
          }).catch(() => undefined);
          if (r && r.status === 201) acknowledged.push(spiffeId);
          await new Promise((r) => setTimeout(r, 10));
        }
      })(),
    ];
    let back: number;
    let realBack: number;
    try {
      await new Promise((r) => setTimeout(r, 2000));
      killedAt = performance.now();
      a.child.kill('SIGKILL');
      // A change through B right after the kill: when each agent has it, it syncs through B again.
      rev1 = (await api(b, 'POST', '/v1/policies', { yaml: yaml('after-kill') }))['revision'] as number;
      await waitFor(
        `every simulated agent having revision ${rev1} through B`,
        async () => (simulated.every((x) => x.on[0] === b && x.synced !== undefined) ? true : undefined),
        60_000,
      );
      back = (Math.max(...simulated.map((x) => x.synced!)) - killedAt) / 1000;
      await waitFor(
        'the real agent enforcing the new revision through B',
        async () =>
          ((await api(b, 'GET', '/v1/policy/status'))['agents'] as Array<{ spiffeId: string; revision: number }>).some(
            (x) => x.spiffeId.endsWith('/real-node') && x.revision === rev1,
          )
            ? true
            : undefined,
        60_000,
      );
      realBack = (performance.now() - killedAt) / 1000;
      await new Promise((r) => setTimeout(r, 2000)); // the workload keeps fetching after the move too
    } finally {
      stop = true;
      for (const x of simulated) x.agent.close();
      await Promise.all([...loads, ...simLoops]);
      writer.destroy();
    }
    console.log(
      `   ${SIM_AGENTS} simulated agents all had a change made through B ${back.toFixed(1)} s after the kill, the real agent acknowledged it through B at ${realBack.toFixed(1)} s; ` +
        `${calls} Workload API calls (${callsAfterKill} after the kill), ${failures.length} failed; ${acknowledged.length} acknowledged writes`,
    );
    assert.deepEqual(failures, [], 'no Workload API call failed');
    assert.ok(callsAfterKill > 0, 'the workload kept fetching after the kill');
    assert.ok(back < 10, `every agent synced again through B within 10 s (took ${back.toFixed(1)} s)`);
    const listed = new Set<string>();
    let pageToken = '';
    do {
      const page = await api(b, 'GET', `/v1/entries?pageSize=1000${pageToken ? `&pageToken=${pageToken}` : ''}`);
      for (const e of page['entries'] as Array<{ spiffeId: string }>) listed.add(e.spiffeId);
      pageToken = (page['nextPageToken'] as string | undefined) ?? '';
    } while (pageToken);
    assert.ok(acknowledged.length > 0, 'writes were acknowledged');
    assert.deepEqual(
      acknowledged.filter((id) => !listed.has(id)),
      [],
      'every write answered 201 before (and after) the kill is there',
    );
  });
});
