/**
 * Propagation benchmark: N simulated agents (light in-process clients speaking the real agent
 * protocol: join-token attestation, mTLS with their own SVIDs, long-poll sync) against a server
 * process; time from the `policy apply` / `quarantine add` call until each agent has the change.
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent as HttpsAgent, request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createCsr, toPem } from '@writ/spiffe';
import { percentile, row } from './util.ts';

const ROOT = new URL('../', import.meta.url).pathname;

function call(base: string, agent: HttpsAgent, method: string, path: string, body?: unknown, token?: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(new URL(path, base), {
      method, agent, timeout: 60_000,
      headers: { ...(payload ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const t = Buffer.concat(chunks).toString();
        if ((res.statusCode ?? 500) >= 300) return reject(new Error(`${method} ${path}: ${res.statusCode} ${t.slice(0, 200)}`));
        resolve(t ? (JSON.parse(t) as Record<string, unknown>) : {});
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

interface SimAgent {
  polls: number;
  agent: HttpsAgent;
  state: { since: number; bundles: string; policy: number; quarantine: string };
  stopped: boolean;
}

async function startServer(dir: string): Promise<{ url: string; stop: () => void }> {
  const child = spawn(process.execPath, [...(process.env['BENCH_PROFILE'] ? ['--cpu-prof', '--cpu-prof-dir=/tmp/sprof'] : []), join(ROOT, 'packages/cli/bin/writ.js'), 'server', 'start', '--data-dir', dir, '--trust-domain', 'bench.example', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
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
  child.stdout!.resume();
  return { url, stop: () => child.kill() };
}

async function measure(n: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-prop-'));
  const server = await startServer(dir);
  const ca = readFileSync(join(dir, 'bundle.pem'), 'utf8');
  const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
  const admin = new HttpsAgent({ ca, keepAlive: true });
  try {
    // Attest n agents (in batches, to keep the setup itself reasonable).
    const sims: SimAgent[] = [];
    for (let i = 0; i < n; i += 200) {
      await Promise.all(Array.from({ length: Math.min(200, n - i) }, async (_, k) => {
        const jt = (await call(server.url, admin, 'POST', '/v1/join-tokens', { nodeName: `sim-${i + k}` }, token))['token'] as string;
        const kp = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const csr = toPem('CERTIFICATE REQUEST', createCsr({ key: kp.privateKey, keyType: 'ec-p256' }, kp.publicKey));
        const att = await call(server.url, new HttpsAgent({ ca }), 'POST', '/v1/agent/attest/join-token', { joinToken: jt, csr });
        sims.push({ polls: 0, agent: new HttpsAgent({ ca, cert: att['svid'] as string, key: kp.privateKey.export({ format: 'pem', type: 'pkcs8' }), keepAlive: true, maxSockets: 1 }), state: { since: 0, bundles: '', policy: 0, quarantine: '' }, stopped: false });
      }));
    }
    const arrivals = new Map<string, number[]>();
    const loop = async (s: SimAgent): Promise<void> => {
      while (!s.stopped) {
        const q = new URLSearchParams({ since: String(s.state.since), wait: '25', bundles: s.state.bundles, policy: String(s.state.policy), quarantine: s.state.quarantine });
        let r: Record<string, unknown>;
        try {
          r = await call(server.url, s.agent, 'GET', `/v1/agent/sync?${q}`);
        } catch {
          if (s.stopped) return;
          continue;
        }
        const now = performance.now();
        s.polls++;
        const pol = r['policy'] as { revision: number } | undefined;
        const qu = r['quarantine'] as { version: string };
        if (pol && pol.revision !== s.state.policy) (arrivals.get(`policy:${pol.revision}`) ?? arrivals.set(`policy:${pol.revision}`, []).get(`policy:${pol.revision}`)!).push(now);
        if (qu.version !== s.state.quarantine && qu.version) (arrivals.get(`quarantine:${qu.version}`) ?? arrivals.set(`quarantine:${qu.version}`, []).get(`quarantine:${qu.version}`)!).push(now);
        s.state = { since: r['revision'] as number, bundles: r['bundlesVersion'] as string, policy: pol?.revision ?? s.state.policy, quarantine: qu.version };
      }
    };
    const loops = sims.map(loop);
    // Everyone has had its full sync and is waiting on a long poll before anything changes.
    while (sims.some((s) => s.polls < 1)) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 1000));

    const report = async (what: string, key: string, act: () => Promise<unknown>): Promise<void> => {
      const t0 = performance.now();
      await act();
      const start = performance.now();
      while ((arrivals.get(key)?.length ?? 0) < n && performance.now() - start < 30_000) await new Promise((r) => setTimeout(r, 5));
      const lat = (arrivals.get(key) ?? []).map((t) => t - t0).sort((a, b) => a - b);
      row(`${n} agents: ${what}`, `p50 ${percentile(lat, 50).toFixed(0)} ms`, `p99 ${percentile(lat, 99).toFixed(0)} ms, all ${lat.at(-1)?.toFixed(0)} ms`, `${lat.length}/${n}`, 'p99 <= 250 ms');
    };
    const yaml = `apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: p }\nspec:\n  to: spiffe://bench.example/ns/a/sa/b\n  rules: [{ effect: allow, from: ["spiffe://bench.example/**"] }]\n`;
    await report('policy apply -> all have it', 'policy:1', () => call(server.url, admin, 'POST', '/v1/policies', { yaml }, token));
    await new Promise((r) => setTimeout(r, 1000));
    await report('quarantine add -> all have it', 'quarantine:spiffe://bench.example/ns/x/sa/y@', () => call(server.url, admin, 'POST', '/v1/quarantine', { spiffeId: 'spiffe://bench.example/ns/x/sa/y', reason: 'bench' }, token));
    for (const s of sims) (s.stopped = true, s.agent.destroy());
    server.stop();
    await Promise.allSettled(loops);
  } finally {
    server.stop();
    admin.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<void> {
  console.log('\nPropagation benchmark (server process on SQLite; simulated agents in this process)\n');
  row('measurement', 'p50', 'p99 / slowest', 'reached', 'target');
  for (const n of (process.env['BENCH_AGENTS'] ?? '1000,5000').split(',').map(Number)) await measure(n);
}
