/**
 * Agent benchmark: Workload API connect -> first X509SVIDResponse (p50/p99) beside a bare HTTP/2
 * round trip on the same kind of socket; 1,000 concurrent FetchX509SVID streams with the agent's
 * RSS and CPU; 10,000 entries synced to one agent.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as h2connect, createServer as h2server } from 'node:http2';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { Agent } from '@writ/agent';
import { WorkloadClient } from '@writ/sdk';
import { loadServerConfig, startServer, type EntryInput } from '@writ/server';
import { fmt, percentile, row } from './util.ts';

const ROOT = new URL('../', import.meta.url).pathname;
const quiet = pino({ level: 'silent' });

function procStats(pid: number): { rssMb: number; cpuMs: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]); // utime + stime
  return { rssMb: rssKb / 1024, cpuMs: (ticks * 1000) / 100 };
}

async function bareH2RoundTrips(n: number, dir: string): Promise<number[]> {
  const path = join(dir, 'bare.sock');
  const srv = h2server((_req, res) => res.end(Buffer.alloc(1500)));
  await new Promise<void>((r) => srv.listen(path, () => r()));
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const s = h2connect('http://localhost', { createConnection: () => netConnect(path) });
    await new Promise<void>((resolve, reject) => {
      const req = s.request({ ':path': '/' });
      req
        .on('data', () => undefined)
        .on('end', () => resolve())
        .on('error', reject);
      req.end();
    });
    times.push(performance.now() - t);
    s.close();
  }
  srv.close();
  return times.sort((a, b) => a - b);
}

export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-agent-'));
  const server = await startServer(loadServerConfig({ trustDomain: 'bench.example', dataDir: join(dir, 'srv'), listen: '127.0.0.1:0' }), { log: quiet });
  const caPem = readFileSync(join(dir, 'srv', 'bundle.pem'), 'utf8');
  const joinToken = async (node: string): Promise<string> => {
    const res = await fetchJson(server.url, caPem, readFileSync(join(dir, 'srv', 'admin.token'), 'utf8').trim(), '/v1/join-tokens', { nodeName: node });
    return res['token'] as string;
  };
  const base = {
    selectors: [`unix:uid:${process.getuid!()}`],
    x509SvidTtl: 0,
    jwtSvidTtl: 0,
    dnsNames: [],
    federatesWith: [],
    admin: false,
    hint: '',
    expiresAt: null,
  } satisfies Partial<EntryInput>;
  console.log('\nAgent benchmark\n');
  row('measurement', 'result', 'baseline (same run)', 'ratio', 'target');
  try {
    // ---------------------------------------------------------------- agent as a child process
    await server.store.createEntries([{ ...base, spiffeId: 'spiffe://bench.example/w', parentId: 'spiffe://bench.example/writ/agent/n1' }], Date.now());
    const socket = join(dir, 'api.sock');
    const child = spawn(
      process.execPath,
      [
        join(ROOT, 'packages/cli/bin/writ.js'),
        'agent',
        'start',
        '--data-dir',
        join(dir, 'a1'),
        '--socket',
        socket,
        '--join-token',
        await joinToken('n1'),
        '--log-level',
        'warn',
      ],
      {
        env: { ...process.env, WRIT_SERVER: server.url, WRIT_CA_FILE: join(dir, 'srv', 'bundle.pem') },
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    try {
      const ep = `unix://${socket}`;
      for (let i = 0; ; i++) {
        try {
          const c = new WorkloadClient(ep);
          await c.fetchX509Context();
          c.close();
          break;
        } catch (err) {
          if (i > 200) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      const N = 500;
      const times: number[] = [];
      for (let i = 0; i < N; i++) {
        const t = performance.now();
        const c = new WorkloadClient(ep);
        await c.fetchX509Context();
        times.push(performance.now() - t);
        c.close();
      }
      times.sort((a, b) => a - b);
      const bare = await bareH2RoundTrips(N, dir);
      row(
        `connect -> first X509SVIDResponse (${N}x)`,
        `p50 ${percentile(times, 50).toFixed(2)} ms`,
        `bare h2 round trip p50 ${percentile(bare, 50).toFixed(2)} ms`,
        (percentile(times, 50) / percentile(bare, 50)).toFixed(1),
        '',
      );
      row(
        '',
        `p99 ${percentile(times, 99).toFixed(2)} ms`,
        `p99 ${percentile(bare, 99).toFixed(2)} ms`,
        (percentile(times, 99) / percentile(bare, 99)).toFixed(1),
        'p99 <= 20 ms',
      );

      const idle = procStats(child.pid!);
      const STREAMS = 1000;
      const clients: WorkloadClient[] = [];
      const stops: Array<() => void> = [];
      const t0 = performance.now();
      let got = 0;
      await new Promise<void>((resolve) => {
        for (let i = 0; i < STREAMS; i++) {
          const c = new WorkloadClient(ep);
          clients.push(c);
          let first = true;
          stops.push(
            c.watchX509Context(() => {
              if (first) (first = false), ++got === STREAMS && resolve();
            }),
          );
        }
      });
      const openMs = performance.now() - t0;
      const busy = procStats(child.pid!);
      await new Promise((r) => setTimeout(r, 2000));
      const held = procStats(child.pid!);
      row(
        `${fmt(STREAMS)} concurrent FetchX509SVID streams`,
        `RSS ${held.rssMb.toFixed(0)} MB`,
        `idle agent RSS ${idle.rssMb.toFixed(0)} MB`,
        (held.rssMb / idle.rssMb).toFixed(1),
        'RSS <= 150 MB',
      );
      row('', `open all: ${openMs.toFixed(0)} ms`, `agent CPU ${(busy.cpuMs - idle.cpuMs).toFixed(0)} ms`, '', '');
      row('', `CPU while held 2 s: ${(held.cpuMs - busy.cpuMs).toFixed(0)} ms`, '', '', '');
      for (const s of stops) s();
      for (const c of clients) c.close();
    } finally {
      child.kill();
    }

    // ---------------------------------------------------------------- 10,000 entries to one agent
    const M = Number(process.env['BENCH_AGENT_ENTRIES'] ?? 10_000);
    const parent = 'spiffe://bench.example/writ/agent/n2';
    const entries = Array.from({ length: M }, (_, i) => ({
      ...base,
      spiffeId: `spiffe://bench.example/svc/${i}`,
      parentId: parent,
      selectors: [`k8s:pod-uid:${i}`],
    }));
    for (let i = 0; i < M; i += 5000) await server.store.createEntries(entries.slice(i, i + 5000), Date.now());
    const agent = new Agent({ serverUrl: server.url, caPem, joinToken: await joinToken('n2'), dataDir: join(dir, 'a2'), log: quiet });
    const t1 = performance.now();
    const startP = agent.start();
    let synced = 0;
    let signed = 0;
    const all = () => Array.from({ length: M }, (_, i) => `k8s:pod-uid:${i}`);
    const sel = all();
    for (;;) {
      const have = agent.entriesFor(sel).length;
      if (!synced && have === M) synced = performance.now() - t1;
      if (synced) {
        const es = agent.entriesFor(sel);
        if (es.every((e) => agent.svidOf(e))) {
          signed = performance.now() - t1;
          break;
        }
      }
      await new Promise((r) => setTimeout(r, 20));
      if (performance.now() - t1 > 120_000) throw new Error('timed out syncing');
    }
    await startP;
    agent.stop();
    row(
      `${fmt(M)} entries synced to one agent`,
      `${(synced / 1000).toFixed(2)} s`,
      `(all ${fmt(M)} SVIDs signed: ${(signed / 1000).toFixed(2)} s)`,
      '',
      '<= 2 s',
    );
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function fetchJson(base: string, ca: string, token: string, path: string, body: unknown): Promise<Record<string, unknown>> {
  const { request } = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, base),
      { method: 'POST', ca, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } },
      (res) => {
        let t = '';
        res.on('data', (d: Buffer) => (t += d.toString()));
        res.on('end', () => resolve(JSON.parse(t) as Record<string, unknown>));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}
