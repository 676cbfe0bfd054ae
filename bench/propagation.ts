/**
 * Propagation benchmark: N simulated agents (light in-process clients speaking the real agent
 * protocol: join-token attestation, mTLS with their own SVIDs, long-poll sync) against a server
 * process; time from the `policy apply` / `quarantine add` call until each agent has the change.
 *
 * Then the replicas mode (issue 16): on PostgreSQL, one replica and two replicas measured in the
 * same run, the agents split over both and every change applied through the first, so half the
 * agents hear of it through the other replica's LISTEN (BENCH_REPLICA_AGENTS, default 2000;
 * BENCH_REPLICAS=0 skips it, BENCH_REPLICAS=2 runs only the two-replica rows, BENCH_AGENTS= (empty)
 * skips the SQLite run). BENCH_WRIT=path/to/packages/cli/bin/writ.js runs the servers from another checkout or build (an A/B
 * against a baseline bundle in the same sitting).
 */
import pg from 'pg';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent as HttpsAgent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createCsr, toPem } from '@writ/spiffe';
import { AGENT_PATHS, encodeSyncQuery } from '@writ/protocol';
import { LeanConn, percentile, row } from './util.ts';

const ROOT = new URL('../', import.meta.url).pathname;

export function call(
  base: string,
  agent: HttpsAgent,
  method: string,
  path: string,
  body?: unknown,
  token?: string,
  retried = false,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      new URL(path, base),
      {
        method,
        agent,
        timeout: 60_000,
        headers: { ...(payload ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const t = Buffer.concat(chunks).toString();
          if ((res.statusCode ?? 500) >= 300) return reject(new Error(`${method} ${path}: ${res.statusCode} ${t.slice(0, 200)}`));
          resolve(t ? (JSON.parse(t) as Record<string, unknown>) : {});
        });
      },
    );
    // A keep-alive connection the server closed just as this request went out on it (Node's
    // documented race, `reusedSocket`): once more on a new one, not a failure of the server.
    req.on('error', (e: NodeJS.ErrnoException) =>
      !retried && req.reusedSocket && e.code === 'ECONNRESET' ? call(base, agent, method, path, body, token, true).then(resolve, reject) : reject(e),
    );
    req.end(payload);
  });
}

interface SimAgent {
  polls: number;
  conn: LeanConn;
  state: { since: number; bundles: string; policy: number; quarantine: string };
  stopped: boolean;
}

export async function startServer(
  dir: string,
  extra: readonly string[] = [],
): Promise<{ url: string; dir: string; pid: number; stop: () => void; exited: Promise<void> }> {
  const child = spawn(
    process.execPath,
    [
      ...(process.env['BENCH_PROFILE'] ? ['--cpu-prof', `--cpu-prof-dir=${process.env['BENCH_PROFILE']}`] : []),
      process.env['BENCH_WRIT'] ?? join(ROOT, 'packages/cli/bin/writ.js'),
      'server',
      'start',
      '--data-dir',
      dir,
      '--trust-domain',
      'bench.example',
      '--listen',
      '127.0.0.1:0',
      ...(process.env['BENCH_SERVER_LOG'] ? ['--log-level', 'debug'] : []),
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /"url":"(https:\/\/[^"]+)".*"msg":"writ server listening"/.exec(buf);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
  child.stdout!.removeAllListeners('data');
  // BENCH_SERVER_LOG=FILE keeps the server's log (request timings) for a closer look.
  if (process.env['BENCH_SERVER_LOG']) child.stdout!.pipe(createWriteStream(process.env['BENCH_SERVER_LOG']));
  else child.stdout!.resume();
  const exited = new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
  return { url, dir, pid: child.pid!, stop: () => child.kill(), exited };
}

export const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';

export async function pgAdmin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/**
 * Attests `n` simulated agents through the server at `url` (a join token each, then the join-token
 * attestation with a CSR), in batches to keep the setup itself reasonable: each agent's client
 * certificate and key, for a LeanConn to any replica. `batch` at a time (every attestation appends
 * an audit leaf under one row lock: on a loaded machine 200 at once can outwait the pool's 3 s).
 */
export async function attestSimAgents(
  url: string,
  admin: HttpsAgent,
  ca: string,
  token: string,
  n: number,
  nodeName: (i: number) => string,
  batch = 200,
): Promise<Array<{ cert: string; key: string }>> {
  const out: Array<{ cert: string; key: string }> = [];
  for (let i = 0; i < n; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, n - i) }, async (_, k) => {
        // A 503 (the store's pool busier than its connect timeout, on a loaded machine) or a reset
        // (a kept-alive connection the server closed as it was reused) is retried from a new join
        // token: setup, not the measurement.
        for (let attempt = 1; ; attempt++) {
          try {
            const jt = (await call(url, admin, 'POST', '/v1/join-tokens', { nodeName: nodeName(i + k) }, token))['token'] as string;
            const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
            const csr = toPem('CERTIFICATE REQUEST', createCsr({ key: kp.privateKey, keyType: 'ec-p256' }, kp.publicKey));
            const att = await call(url, new HttpsAgent({ ca }), 'POST', AGENT_PATHS.attestJoinToken, { joinToken: jt, csr });
            out[i + k] = { cert: att['svid'] as string, key: kp.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
            return;
          } catch (err) {
            const e = err as NodeJS.ErrnoException;
            if (attempt >= 5 || !(/: 503 /.test(e.message) || e.code === 'ECONNRESET')) throw err;
            await new Promise((r) => setTimeout(r, 500 * attempt));
          }
        }
      }),
    );
  }
  return out;
}

/** Attestations under way at a time: more only queue for the server's ten database connections. */
const ATTEST_BATCH = 50;
/** First syncs started at a time (BENCH_CONNECT_WAVE). */
const CONNECT_WAVE = Number(process.env['BENCH_CONNECT_WAVE'] ?? 100);
/** How long a change may take to reach everyone before the row reports what it has. */
const WAIT_MS = 60_000;

/** `replicas`: 0 for one server on SQLite (the default store), else that many servers on one fresh PostgreSQL database. */
async function measure(n: number, replicas = 0): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-prop-'));
  const dbName = `writ_bench_prop_${process.pid}_${replicas}_${n}`;
  let dbArgs: string[] = [];
  if (replicas > 0) {
    await pgAdmin(`CREATE DATABASE ${dbName}`);
    const u = new URL(PG_URL);
    u.pathname = `/${dbName}`;
    dbArgs = ['--db', u.toString()];
  }
  const servers = [await startServer(dir, dbArgs)];
  for (let i = 1; i < replicas; i++) servers.push(await startServer(mkdtempSync(join(tmpdir(), 'writ-bench-prop-')), dbArgs));
  const server = servers[0]!;
  // Every replica's CA in the trust bundle (each publishes its own on start).
  await new Promise((r) => setTimeout(r, replicas > 1 ? 1500 : 0));
  // The last replica started knows every CA (it read the others' from the store at start): its bundle is the one to trust.
  const last = servers.at(-1)!;
  const ca = servers.length > 1 ? await bundlePem(last.url, readFileSync(join(last.dir, 'bundle.pem'), 'utf8')) : readFileSync(join(dir, 'bundle.pem'), 'utf8');
  const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
  const admin = new HttpsAgent({ ca, keepAlive: true });
  const label = replicas === 0 ? `${n} agents` : `${n} agents, ${replicas} replica${replicas > 1 ? 's' : ''}`;
  try {
    const setup0 = performance.now();
    // Attest n agents; agent i syncs with replica i mod R, the change is applied on the first.
    const sims: SimAgent[] = (await attestSimAgents(server.url, admin, ca, token, n, (i) => `sim-${i}`, ATTEST_BATCH)).map((tls, i) => {
      const { hostname, port } = new URL(servers[i % servers.length]!.url);
      return {
        polls: 0,
        conn: new LeanConn({ host: hostname, port: Number(port), ca, ...tls, servername: 'localhost' }),
        state: { since: 0, bundles: '', policy: 0, quarantine: '' },
        stopped: false,
      };
    });
    const arrivals = new Map<string, number[]>();
    const loop = async (s: SimAgent): Promise<void> => {
      while (!s.stopped) {
        const q = encodeSyncQuery({
          since: s.state.since,
          wait: s.polls === 0 ? 0 : 25,
          bundles: s.state.bundles,
          policy: s.state.policy,
          quarantine: s.state.quarantine,
          lean: true,
        });
        let r: Record<string, unknown>;
        try {
          const a = await s.conn.request('GET', `${AGENT_PATHS.sync}?${q}`);
          if (a.status !== 200) throw new Error(`HTTP ${a.status}: ${a.body.toString().slice(0, 200)}`);
          r = JSON.parse(a.body.toString()) as Record<string, unknown>;
        } catch {
          if (s.stopped) return;
          // A refused or timed-out connection is tried again, not in a tight loop.
          await new Promise((r) => setTimeout(r, 100));
          continue;
        }
        const now = performance.now();
        s.polls++;
        const pol = r['policy'] as { revision: number } | undefined;
        const qu = r['quarantine'] as { version: string };
        if (pol && pol.revision !== s.state.policy)
          (arrivals.get(`policy:${pol.revision}`) ?? arrivals.set(`policy:${pol.revision}`, []).get(`policy:${pol.revision}`)!).push(now);
        // After the first answer (which brings the current version), a new version is the quarantine add.
        if (qu.version !== s.state.quarantine && s.polls > 1) (arrivals.get('quarantine') ?? arrivals.set('quarantine', []).get('quarantine')!).push(now);
        s.state = { since: r['revision'] as number, bundles: r['bundlesVersion'] as string, policy: pol?.revision ?? s.state.policy, quarantine: qu.version };
      }
    };
    // The first syncs (each a TLS handshake with a client certificate, costly on both sides) in
    // waves: thousands at once leave this process too far behind to finish its handshakes within
    // the server's 10 s, and the retries make it worse.
    const connect0 = performance.now();
    const loops: Array<Promise<void>> = [];
    for (let i = 0; i < sims.length; i += CONNECT_WAVE) {
      const wave = sims.slice(i, i + CONNECT_WAVE);
      loops.push(...wave.map(loop));
      while (wave.some((s) => s.polls < 1)) await new Promise((r) => setTimeout(r, 20));
    }
    // Everyone has had its full sync and is waiting on a long poll before anything changes.
    while (sims.some((s) => s.polls < 1)) await new Promise((r) => setTimeout(r, 50));
    console.log(
      `   (${label}: attested in ${((connect0 - setup0) / 1000).toFixed(0)} s, first syncs in ${((performance.now() - connect0) / 1000).toFixed(0)} s)`,
    );
    await new Promise((r) => setTimeout(r, 1000));

    const report = async (what: string, key: string, act: () => Promise<unknown>, revision?: number): Promise<void> => {
      const t0 = performance.now();
      const hr0 = process.hrtime.bigint() / 1000n;
      const wall0 = Date.now();
      if (process.env['BENCH_SERVER_LOG']) console.log(`   ${what} at ${new Date().toISOString()}`);
      await act();
      const start = performance.now();
      const callMs = start - t0;
      // For a policy: also until `GET /v1/policy/status` shows every agent enforcing it; each
      // agent's acknowledgement time is when the server heard it (its `ackedAt`).
      let acks: number[] = [];
      // Read once every agent has it (or the wait is over): a status read of thousands of agents
      // every 50 ms during the fan-out would slow the server it measures.
      while ((arrivals.get(key)?.length ?? 0) < n && performance.now() - start < WAIT_MS) await new Promise((r) => setTimeout(r, 5));
      const acked =
        revision === undefined
          ? Promise.resolve()
          : (async () => {
              while (performance.now() - start < WAIT_MS) {
                const st = (await call(server.url, admin, 'GET', '/v1/policy/status', undefined, token)) as {
                  agents: Array<{ revision: number; ackedAt: string }>;
                };
                if (st.agents.length === n && st.agents.every((a) => a.revision === revision))
                  return void (acks = st.agents.map((a) => Date.parse(a.ackedAt) - wall0).sort((a, b) => a - b));
                await new Promise((r) => setTimeout(r, 50));
              }
            })();
      await acked;
      const lat = (arrivals.get(key) ?? []).map((t) => t - t0).sort((a, b) => a - b);
      // The fan-out's window on the monotonic clock the servers' CPU profiles are stamped with.
      if (process.env['BENCH_PROFILE']) console.log(`   (profile window for ${what}: ${hr0} to ${process.hrtime.bigint() / 1000n} us)`);
      row(
        `${label}: ${what}`,
        `p50 ${percentile(lat, 50).toFixed(0)} ms`,
        `p99 ${percentile(lat, 99).toFixed(0)} ms, all ${lat.at(-1)?.toFixed(0)} ms`,
        `${lat.length}/${n}`,
        replicas > 1 ? 'p99 <= 1 s' : 'p99 <= 250 ms',
      );
      if (revision !== undefined)
        row(
          `${label}: ${what.replace('all have it', 'all acknowledged')}`,
          `p50 ${percentile(acks, 50).toFixed(0)} ms`,
          `p99 ${percentile(acks, 99).toFixed(0)} ms, all ${acks.at(-1)?.toFixed(0)} ms`,
          `${acks.length}/${n}`,
          'p99 <= 250 ms',
        );
      console.log(`   (the admin call itself took ${callMs.toFixed(0)} ms; the first agent had it at ${lat[0]?.toFixed(0)} ms)`);
    };
    const yaml = `apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: p }\nspec:\n  to: spiffe://bench.example/ns/a/sa/b\n  rules: [{ effect: allow, from: ["spiffe://bench.example/**"] }]\n`;
    await report('policy apply -> all have it', 'policy:1', () => call(server.url, admin, 'POST', '/v1/policies', { yaml }, token), 1);
    await new Promise((r) => setTimeout(r, 1000));
    await report('quarantine add -> all have it', 'quarantine', () =>
      call(server.url, admin, 'POST', '/v1/quarantine', { spiffeId: 'spiffe://bench.example/ns/x/sa/y', reason: 'bench' }, token),
    );
    for (const s of sims) (s.stopped = true), s.conn.destroy();
    for (const sv of servers) sv.stop();
    await Promise.allSettled(loops);
  } finally {
    for (const sv of servers) sv.stop();
    admin.destroy();
    for (const sv of servers) rmSync(sv.dir, { recursive: true, force: true });
    if (replicas > 0) {
      // Dropped once the servers have stopped: a connection terminated under a draining server ends it with an error.
      await Promise.race([Promise.all(servers.map((sv) => sv.exited)), new Promise((r) => setTimeout(r, 10_000))]);
      await pgAdmin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    }
  }
}

/** The trust bundle as PEM from `GET /v1/bundle` (JWKS with x5c): every replica's CA. */
export async function bundlePem(url: string, ca: string): Promise<string> {
  const b = (await call(url, new HttpsAgent({ ca }), 'GET', '/v1/bundle')) as { keys: Array<{ use: string; x5c?: string[] }> };
  const certs = b.keys.filter((k) => k.use === 'x509-svid').flatMap((k) => k.x5c ?? []);
  return certs.map((c) => `-----BEGIN CERTIFICATE-----\n${c.match(/.{1,64}/g)!.join('\n')}\n-----END CERTIFICATE-----\n`).join('');
}

export async function run(): Promise<void> {
  console.log('\nPropagation benchmark (server process on SQLite; simulated agents in this process)\n');
  row('measurement', 'p50', 'p99 / slowest', 'reached', 'target');
  const counts = (v: string): number[] =>
    v
      .split(',')
      .filter((x) => x.trim() !== '')
      .map(Number);
  for (const n of counts(process.env['BENCH_AGENTS'] ?? '1000,5000')) await measure(n);
  if (process.env['BENCH_REPLICAS'] === '0') return;
  console.log('\nReplicas on PostgreSQL (one, then two in the same run; agents split over both, every change applied through the first)\n');
  row('measurement', 'p50', 'p99 / slowest', 'reached', 'target');
  for (const n of counts(process.env['BENCH_REPLICA_AGENTS'] ?? '2000')) {
    if (process.env['BENCH_REPLICAS'] !== '2') await measure(n, 1);
    await measure(n, 2);
  }
}
