/**
 * Token-exchange benchmark: the broker's core on one core (decide + claims + sign, and a
 * receiver's verifyToken) beside plain JWT-SVID signing with the same key, then `POST /v1/token`
 * through a real `writ server` process (mTLS client, keep-alive) beside `POST /v1/svids/jwt` in the
 * same run: exchanges per second and p50/p99 latency; then the SDK's `exchangeToken` through a
 * `writ agent` process (the agent's TokenBroker), answered from its cache and asking the server:
 * by the SDK in this process, and one call at a time by `bench/go/brokerload`, a grpc-go client in
 * a process of its own (exact p50/p99 over BENCH_CALLS calls) beside its FetchJWTSVID.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { readFileSync } from 'node:fs';
import { TOKEN_TYPE_JWT, accessTokenClaims, decideGrant, parseTokenPolicies, signToken, verifyToken, ACCESS_TOKEN_TYP } from '@writ/broker';
import { createCsr, signJwtSvid, toPem } from '@writ/spiffe';
import { generateSigner } from '@writ/server';
import { WorkloadClient } from '@writ/sdk';
import { ensureBundle, fmt, percentile, rate, row } from './util.ts';
import { startServer } from './vuln/server.ts';

const TD = 'bench.example';
const WEB = `spiffe://${TD}/ns/shop/web`;
const ORDERS = `spiffe://${TD}/ns/shop/orders`;
const USER = `spiffe://${TD}/users/alice`;
const POLICY = `apiVersion: writ.dev/v1
kind: TokenPolicy
metadata: { name: shop }
spec:
  clients: ["spiffe://${TD}/ns/shop/*"]
  subjects: ["spiffe://${TD}/users/*", "spiffe://${TD}/ns/shop/*"]
  audiences: ["spiffe://${TD}/ns/shop/*"]
  scopes: ["orders:*"]
`;

function core(seconds: number): void {
  const signer = generateSigner('ec-p256');
  const policies = parseTokenPolicies(POLICY);
  const bundles = new Map([[TD, { jwtAuthorities: new Map([['k', signer.publicKey]]) }]]);
  const now = Date.now();
  const subject = { id: USER, kind: 'jwt-svid' as const, actors: [], expiresAt: now + 300_000 };
  const svid = rate(seconds, (i) => signJwtSvid({ sub: `${USER}${i & 1023}`, aud: ORDERS, exp: Math.floor(now / 1000) + 300 }, 'k', signer));
  const exchange = rate(seconds, () => {
    const d = decideGrant(policies, { client: WEB, subject, audience: ORDERS, scopes: ['orders:read'], requestedTokenType: TOKEN_TYPE_JWT, now });
    if (!d.granted) throw new Error(d.reason);
    signToken(
      accessTokenClaims({ issuer: 'https://bench', subject: USER, audience: ORDERS, scopes: d.scopes, client: WEB, actors: d.actors, now, ttlMs: d.ttlMs }),
      ACCESS_TOKEN_TYP,
      'k',
      signer,
    );
  });
  const token = signToken(
    accessTokenClaims({ issuer: 'https://bench', subject: USER, audience: ORDERS, scopes: ['orders:read'], client: WEB, actors: [WEB], now, ttlMs: 300_000 }),
    ACCESS_TOKEN_TYP,
    'k',
    signer,
  );
  const verify = rate(seconds, () => verifyToken(token, { bundles, trustDomain: TD, audience: ORDERS, scopes: ['orders:read'] }), 500);
  console.log(`\nBroker core (one core, EC P-256, ${seconds}s per measurement)\n`);
  row('measurement', 'ops/s', 'baseline (same run)', 'ratio', 'target');
  row('decide + claims + sign (access token)', fmt(exchange), `JWT-SVID sign ${fmt(svid)}/s`, (exchange / svid).toFixed(2), '>= 5,000/s');
  row('verifyToken (receiver)', fmt(verify), '', '', '');
}

const ROOT = new URL('../', import.meta.url).pathname;
const BROKERLOAD = join(ROOT, 'bench/go/bin/brokerload');

/** The Go load generator (bench/go/brokerload, grpc-go pinned by its go.mod), built into the git-ignored bench/go/bin on first use. */
function ensureBrokerload(): void {
  if (existsSync(BROKERLOAD)) return;
  console.log('building bench/go/brokerload (grpc-go) ...');
  execFileSync('go', ['build', '-o', BROKERLOAD, '.'], { cwd: join(ROOT, 'bench/go/brokerload'), stdio: 'inherit' });
}

interface GoResult {
  readonly calls: number;
  readonly rate: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

/** One brokerload run: `calls` calls one at a time on the agent socket; its JSON line. */
function brokerload(socket: string, args: string[]): Promise<GoResult> {
  return new Promise((resolve, reject) =>
    execFile(BROKERLOAD, ['-socket', socket, ...args], { maxBuffer: 1 << 20 }, (err, stdout) => {
      const line = JSON.parse(stdout.trim().split('\n').pop() || '{}') as GoResult & { error?: string };
      if (err || line.error) return reject(new Error(`brokerload ${args.join(' ')}: ${line.error ?? err?.message}`));
      resolve(line);
    }),
  );
}

interface Client {
  post(path: string, body: string, type: string, auth?: string): Promise<{ status: number; body: string }>;
  destroy(): void;
}

function client(url: string, ca: Buffer, tls: { cert?: string; key?: string }, sockets: number): Client {
  const agent = new Agent({ keepAlive: true, maxSockets: sockets, ca, ...tls });
  const u = new URL(url);
  return {
    post: (path, body, type, auth) =>
      new Promise((resolve, reject) => {
        const req = request(
          {
            agent,
            host: u.hostname,
            port: u.port,
            method: 'POST',
            path,
            headers: { 'content-type': type, 'content-length': Buffer.byteLength(body), ...(auth ? { authorization: `Bearer ${auth}` } : {}) },
          },
          (res) => {
            let text = '';
            res.on('data', (d: Buffer) => (text += d.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end(body);
      }),
    destroy: () => agent.destroy(),
  };
}

/** CPU seconds (user + system) a process has used so far, from /proc/PID/stat. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

/** What `pid` spent of CPU while `fn` ran: rate per core = requests / CPU seconds. */
async function onCpu<T extends { rate: number }>(pid: number, fn: () => Promise<T>): Promise<T & { cores: number; perCore: number }> {
  const c0 = cpuSeconds(pid);
  const t0 = performance.now();
  const r = await fn();
  const cores = (cpuSeconds(pid) - c0) / ((performance.now() - t0) / 1000);
  return { ...r, cores, perCore: r.rate / cores };
}

/** `concurrency` requests in flight for `seconds`: requests/s and p50/p99 in ms. */
async function load(seconds: number, concurrency: number, send: () => Promise<void>): Promise<{ rate: number; p50: number; p99: number }> {
  for (let i = 0; i < 200; i++) await send(); // warm-up
  const lat: number[] = [];
  const start = performance.now();
  const end = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        await send();
        lat.push(performance.now() - t);
      }
    }),
  );
  lat.sort((a, b) => a - b);
  return { rate: lat.length / ((performance.now() - start) / 1000), p50: percentile(lat, 50), p99: percentile(lat, 99) };
}

async function throughServer(seconds: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-broker-'));
  const srv = await startServer(dir, 'sqlite');
  try {
    const ca = readFileSync(join(dir, 'bundle.pem'));
    const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
    const admin = client(srv.url, ca, {}, 8);
    const json = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
      const r = await admin.post(path, JSON.stringify(body), 'application/json', token);
      if (r.status >= 300) throw new Error(`${path}: ${r.status} ${r.body}`);
      return JSON.parse(r.body) as Record<string, unknown>;
    };
    await json('/v1/policies', { yaml: POLICY });
    const signer = generateSigner('ec-p256');
    const x509 = await json('/v1/svids/x509', { spiffeId: WEB, csr: toPem('CERTIFICATE REQUEST', createCsr(signer, signer.publicKey)) });
    const key = signer.key.export({ format: 'pem', type: 'pkcs8' }) as string;
    const web = client(srv.url, ca, { cert: x509['svid'] as string, key }, 8);
    const subjects = await Promise.all(
      Array.from({ length: 50 }, async () => (await json('/v1/svids/jwt', { spiffeId: USER, audience: [WEB] }))['token'] as string),
    );
    let i = 0;
    const form = (t: string) =>
      `grant_type=${encodeURIComponent('urn:ietf:params:oauth:grant-type:token-exchange')}&subject_token=${t}&subject_token_type=${encodeURIComponent(TOKEN_TYPE_JWT)}&audience=${encodeURIComponent(ORDERS)}&scope=orders%3Aread`;
    const bodies = subjects.map(form);
    const exchange = async (): Promise<void> => {
      const r = await web.post('/v1/token', bodies[i++ % bodies.length]!, 'application/x-www-form-urlencoded');
      if (r.status !== 200) throw new Error(`exchange: ${r.status} ${r.body}`);
    };
    const mintBody = JSON.stringify({ spiffeId: USER, audience: [ORDERS] });
    const mintOne = async (): Promise<void> => {
      const r = await admin.post('/v1/svids/jwt', mintBody, 'application/json', token);
      if (r.status !== 201) throw new Error(`mint: ${r.status} ${r.body}`);
    };
    // Throughput: 8 in flight; the server's own CPU time gives its rate per core (the load generator shares the box).
    const ex = await onCpu(srv.pid, () => load(seconds, 8, exchange));
    const mint = await onCpu(srv.pid, () => load(seconds, 8, mintOne));
    // Latency: one at a time, so p99 is the call's and not the queue's.
    const ex1 = await load(seconds, 1, exchange);
    const mint1 = await load(seconds, 1, mintOne);
    console.log(`\nThrough the server (a writ server process, SQLite, mTLS keep-alive, ${seconds}s each)\n`);
    row('measurement', 'req/s', 'p50 / p99 ms', '', 'target');
    row('POST /v1/token, 8 in flight', fmt(ex.rate), `${ex.p50.toFixed(2)} / ${ex.p99.toFixed(2)}`, '', '');
    row('… per server core', fmt(ex.perCore), `(${ex.cores.toFixed(2)} cores busy)`, '', '>= 5,000/s per core');
    row(
      'POST /v1/svids/jwt, 8 in flight (baseline)',
      fmt(mint.rate),
      `${mint.p50.toFixed(2)} / ${mint.p99.toFixed(2)}`,
      `${(ex.rate / mint.rate).toFixed(2)}x`,
      '',
    );
    row('… per server core', fmt(mint.perCore), `(${mint.cores.toFixed(2)} cores busy)`, `${(ex.perCore / mint.perCore).toFixed(2)}x`, '');
    row('POST /v1/token, one at a time', fmt(ex1.rate), `${ex1.p50.toFixed(2)} / ${ex1.p99.toFixed(2)}`, '', '');
    row('POST /v1/svids/jwt, one at a time', fmt(mint1.rate), `${mint1.p50.toFixed(2)} / ${mint1.p99.toFixed(2)}`, '', '');
    admin.destroy();
    web.destroy();
    // BENCH_AGENT=0: the server's lines only (a quicker loop while working on the server).
    if (process.env['BENCH_AGENT'] !== '0') await throughAgent(seconds, dir, srv.url, json);
  } finally {
    await srv.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The SDK's exchangeToken through a `writ agent` process: cached (one request again and again) and uncached (a new scope set each time). */
async function throughAgent(seconds: number, dir: string, url: string, json: (path: string, body: unknown) => Promise<Record<string, unknown>>): Promise<void> {
  await json('/v1/entries', { spiffeId: WEB, parentId: `spiffe://${TD}/writ/agent/bench`, selectors: [`unix:uid:${process.getuid!()}`] });
  const joinToken = (await json('/v1/join-tokens', { nodeName: 'bench' }))['token'] as string;
  const socket = join(dir, 'agent.sock');
  const child = spawn(
    process.execPath,
    [
      ...(process.env['BENCH_PROFILE'] ? ['--cpu-prof', `--cpu-prof-dir=${process.env['BENCH_PROFILE']}`] : []),
      // BENCH_WRIT_CLI: another build's bin/writ.js (a copy of an older tree), to compare two agents.
      process.env['BENCH_WRIT_CLI'] ?? new URL('../packages/cli/bin/writ.js', import.meta.url).pathname,
      'agent',
      'start',
      '--data-dir',
      join(dir, 'agent'),
      '--socket',
      socket,
      '--join-token',
      joinToken,
    ],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, WRIT_SERVER: url, WRIT_CA_FILE: join(dir, 'bundle.pem') },
    },
  );
  const wl = new WorkloadClient(`unix://${socket}`, { attempts: 1 });
  try {
    for (let i = 0; ; i++) {
      try {
        await wl.exchangeToken({ audience: ORDERS, scope: 'orders:read' });
        break;
      } catch (err) {
        if (i > 300) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const svid = await load(seconds, 8, async () => {
      if ((await wl.fetchJwtSvids([ORDERS])).length === 0) throw new Error('no JWT-SVID');
    });
    const cachedOne = async (): Promise<void> => {
      if (!(await wl.exchangeToken({ audience: ORDERS, scope: 'orders:read' })).cached) throw new Error('expected a cached token');
    };
    let n = 0;
    const freshOne = async (): Promise<void> => {
      if ((await wl.exchangeToken({ audience: ORDERS, scope: `orders:n${n++}` })).cached) throw new Error('expected a new token');
    };
    const cached = await load(seconds, 8, cachedOne);
    const fresh = await load(seconds, 8, freshOne);
    // The targets are per call: one at a time, p99 is the call's and not the queue's.
    const cached1 = await load(seconds, 1, cachedOne);
    const fresh1 = await load(seconds, 1, freshOne);
    console.log(`\nThrough the agent (SDK exchangeToken on the Workload API socket, 8 in flight, ${seconds}s each)\n`);
    row('measurement', 'req/s', 'p50 / p99 ms', '', 'target');
    row(
      'exchangeToken, from the agent cache',
      fmt(cached.rate),
      `${cached.p50.toFixed(2)} / ${cached.p99.toFixed(2)}`,
      `${(cached.rate / svid.rate).toFixed(2)}x`,
      '',
    );
    row('FetchJWTSVID (baseline, agent-cached)', fmt(svid.rate), `${svid.p50.toFixed(2)} / ${svid.p99.toFixed(2)}`, '', '');
    row(
      'exchangeToken, agent asks the server',
      fmt(fresh.rate),
      `${fresh.p50.toFixed(2)} / ${fresh.p99.toFixed(2)}`,
      `${(cached.rate / fresh.rate).toFixed(1)}x`,
      '',
    );
    row('exchangeToken, cached, one at a time', fmt(cached1.rate), `${cached1.p50.toFixed(2)} / ${cached1.p99.toFixed(2)}`, '', 'p99 <= 0.5 ms');
    row('exchangeToken, uncached, one at a time', fmt(fresh1.rate), `${fresh1.p50.toFixed(2)} / ${fresh1.p99.toFixed(2)}`, '', 'p99 <= 5 ms');

    // The same calls from a client in a process of its own: the bench's pauses are not in these.
    const calls = String(Number(process.env['BENCH_CALLS'] ?? 20_000));
    const goSvid = await brokerload(socket, ['-method', 'jwtsvid', '-audience', ORDERS, '-calls', calls]);
    const goCached = await brokerload(socket, ['-method', 'exchange', '-audience', ORDERS, '-scope', 'orders:read', '-calls', calls]);
    const goFresh = await brokerload(socket, ['-method', 'exchange', '-audience', ORDERS, '-scope', 'orders:g', '-fresh', '-calls', calls]);
    console.log(`\nThrough the agent, one call at a time from bench/go/brokerload (grpc-go, its own process, ${calls} calls each)\n`);
    row('measurement', 'calls/s', 'p50 / p99 ms', 'p99.9', 'target');
    const goRow = (name: string, r: GoResult, target: string): void =>
      row(name, fmt(r.rate), `${r.p50.toFixed(3)} / ${r.p99.toFixed(3)}`, r.p999.toFixed(2), target);
    goRow('FetchJWTSVID (baseline, agent-cached)', goSvid, '');
    goRow('Exchange, from the agent cache', goCached, 'p99 <= 0.5 ms');
    goRow('Exchange, agent asks the server', goFresh, 'p99 <= 5 ms');
  } finally {
    wl.close();
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
}

export async function run(): Promise<void> {
  const seconds = Number(process.env['BENCH_SECONDS'] ?? 3);
  ensureBundle();
  ensureBrokerload();
  console.log(
    `load average at the start: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')} (${new Date().toISOString()})`,
  );
  core(seconds);
  await throughServer(seconds);
}
