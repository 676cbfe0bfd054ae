/**
 * Failover benchmark (issue 16): two `writ server` replicas (A, B) on one fresh PostgreSQL database;
 * BENCH_FAILOVER_AGENTS simulated agents (default 1,000; the propagation benchmark's: join-token
 * attestation, mTLS with their own SVIDs, lean long-poll sync) split over both, each moving to the
 * other replica when its connection fails, as the agent's failover client does;
 * BENCH_FAILOVER_REAL real `writ agent` processes (default 2) given both URLs, A first, each with a
 * workload fetching an X.509-SVID and a JWT-SVID with a new audience (a server call) every 20 ms;
 * an admin writer creating entries through A and B in turn. Then replica A is killed with SIGKILL.
 *
 * Printed: failed Workload API calls; for each agent that was on A, the time from the kill until
 * its first sync answer from B; a policy applied through B right after the kill, until every agent
 * has it, against the same measured before the kill (the baseline, same run: what a change costs
 * without a failover); when the real agents acknowledged it through B; acknowledged writes lost
 * (answered 201 by either replica, then not listed by B).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { AGENT_PATHS, encodeSyncQuery } from '@writ/protocol';
import { WorkloadClient } from '@writ/sdk';
import { attestSimAgents, bundlePem, call, PG_URL, pgAdmin, startServer } from './propagation.ts';
import { fmt, LeanConn, percentile, row } from './util.ts';

const ROOT = new URL('../', import.meta.url).pathname;
const DEADLINE_MS = 60_000;

interface Sim {
  /** One connection per replica, [A, B]; `on` is the one in use. */
  conns: [LeanConn, LeanConn];
  on: 0 | 1;
  startedOn: 0 | 1;
  polls: number;
  state: { since: number; bundles: string; policy: number; quarantine: string };
  /** performance.now() of its first answer from B after the kill. */
  backOnB: number | undefined;
  /** Revision -> when it first had that revision (or a later one). */
  had: Map<number, number>;
}

const env = (k: string, d: number): number => {
  const v = process.env[k];
  return v === undefined || v === '' ? d : Number(v);
};
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const load = (): string =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(', ');

async function until(what: string, ok: () => boolean | Promise<boolean>, ms = DEADLINE_MS): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (await ok()) return true;
    await sleep(20);
  }
  console.log(`   (gave up waiting for ${what} after ${ms / 1000} s)`);
  return false;
}

export async function run(): Promise<void> {
  const n = env('BENCH_FAILOVER_AGENTS', 1000);
  const nReal = env('BENCH_FAILOVER_REAL', 2);
  console.log(
    `\nFailover benchmark: two replicas on PostgreSQL, ${fmt(n)} simulated agents split over both, ${nReal} real agents (A first) with a workload each; kill -9 of A (load average ${load()})\n`,
  );
  const dbName = `writ_bench_failover_${process.pid}`;
  await pgAdmin(`CREATE DATABASE ${dbName}`);
  const u = new URL(PG_URL);
  u.pathname = `/${dbName}`;
  const dbArgs = ['--db', u.toString()];
  const work = mkdtempSync(join(tmpdir(), 'writ-bench-failover-'));
  const a = await startServer(join(work, 'a'), dbArgs);
  const b = await startServer(join(work, 'b'), dbArgs);
  const servers = [a, b] as const;
  const children: ChildProcess[] = [];
  const sims: Sim[] = [];
  const workloads: WorkloadClient[] = [];
  let stopping = false;
  let admin: HttpsAgent | undefined;
  try {
    // B started second: it read A's CA from the store, so its bundle has both.
    await sleep(1500);
    const ca = await bundlePem(b.url, readFileSync(join(b.dir, 'bundle.pem'), 'utf8'));
    const caFile = join(work, 'bundle.pem');
    writeFileSync(caFile, ca);
    const token = readFileSync(join(a.dir, 'admin.token'), 'utf8').trim();
    const adminAgent = new HttpsAgent({ ca, keepAlive: true });
    admin = adminAgent;
    const api = (srv: { url: string }, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> =>
      call(srv.url, adminAgent, method, path, body, token);

    // Simulated agents: attested through the replica they start on (half each).
    const setup0 = performance.now();
    const half = [Math.ceil(n / 2), Math.floor(n / 2)];
    const creds = [];
    for (const [r, s] of servers.entries()) creds.push(await attestSimAgents(s.url, adminAgent, ca, token, half[r]!, (i) => `sim-${r}-${i}`, 50));
    const conn = (srv: { url: string }, tls: { cert: string; key: string }): LeanConn => {
      const { hostname, port } = new URL(srv.url);
      return new LeanConn({ host: hostname, port: Number(port), ca, ...tls, servername: 'localhost' });
    };
    for (const r of [0, 1] as const)
      for (const tls of creds[r]!)
        sims.push({
          conns: [conn(a, tls), conn(b, tls)],
          on: r,
          startedOn: r,
          polls: 0,
          state: { since: 0, bundles: '', policy: 0, quarantine: '' },
          backOnB: undefined,
          had: new Map(),
        });
    console.log(`   ${fmt(n)} agents attested in ${((performance.now() - setup0) / 1000).toFixed(0)} s`);

    let killedAt = Number.POSITIVE_INFINITY;
    const syncErrors = new Map<string, number>();
    const syncError = (k: string): void => void syncErrors.set(k, (syncErrors.get(k) ?? 0) + 1);
    const syncLoop = async (s: Sim): Promise<void> => {
      while (!stopping) {
        const q = encodeSyncQuery({ ...s.state, wait: s.polls === 0 ? 0 : 25, lean: true });
        let r: { status: number; body: Buffer };
        try {
          r = await s.conns[s.on].request('GET', `${AGENT_PATHS.sync}?${q}`);
        } catch {
          if (stopping) return;
          s.on = s.on === 0 ? 1 : 0; // refused, reset, closed: the next replica at once
          continue;
        }
        if (r.status !== 200) {
          syncError(`HTTP ${r.status} from ${s.on ? 'B' : 'A'}`);
          if (r.status === 503) s.on = s.on === 0 ? 1 : 0;
          else await sleep(500);
          continue;
        }
        const now = performance.now();
        s.polls++;
        if (s.on === 1 && now > killedAt) s.backOnB ??= now;
        const ans = JSON.parse(r.body.toString()) as Record<string, unknown>;
        const rev = (ans['policy'] as { revision: number } | undefined)?.revision ?? s.state.policy;
        for (let v = s.state.policy + 1; v <= rev; v++) s.had.set(v, now);
        s.state = {
          since: ans['revision'] as number,
          bundles: ans['bundlesVersion'] as string,
          policy: rev,
          quarantine: (ans['quarantine'] as { version: string }).version,
        };
      }
    };
    const loops = sims.map(syncLoop);
    await until('every agent synced once', () => sims.every((s) => s.polls > 0));

    // Real agents: both URLs, A first; an entry each for this process's uid.
    const uid = process.getuid!();
    const sockets: string[] = [];
    for (let j = 0; j < nReal; j++) {
      const node = `real-${j}`;
      const jt = (await api(a, 'POST', '/v1/join-tokens', { nodeName: node }))['token'] as string;
      await api(a, 'POST', '/v1/entries', {
        spiffeId: `spiffe://bench.example/failover/w${j}`,
        parentId: `spiffe://bench.example/writ/agent/${node}`,
        selectors: [`unix:uid:${uid}`],
      });
      const dir = join(work, node);
      const socket = join(dir, 'api.sock');
      const child = spawn(
        process.execPath,
        [
          join(ROOT, 'packages/cli/bin/writ.js'),
          'agent',
          'start',
          '--server',
          a.url,
          '--server',
          b.url,
          '--data-dir',
          dir,
          '--socket',
          socket,
          '--join-token',
          jt,
        ],
        { env: { ...process.env, WRIT_CA_FILE: caFile }, stdio: ['ignore', 'pipe', 'inherit'] },
      );
      children.push(child);
      await new Promise<void>((resolve, reject) => {
        let buf = '';
        child.stdout!.on('data', (d: Buffer) => {
          buf += d.toString();
          if (buf.includes('"writ agent serving the Workload API"')) resolve();
        });
        child.once('exit', (c) => reject(new Error(`agent ${node} exited ${c}`)));
      });
      child.stdout!.removeAllListeners('data');
      child.stdout!.resume();
      sockets.push(socket);
    }
    for (const [j, socket] of sockets.entries()) {
      const c = new WorkloadClient(`unix://${socket}`, { attempts: 1 });
      workloads.push(c);
      await until(`the SVID of w${j}`, async () => ((await c.fetchX509Context().catch(() => undefined))?.svids.length ?? 0) > 0);
    }

    const yaml = (name: string): string =>
      `apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: ${name} }\nspec:\n  to: spiffe://bench.example/failover/w0\n  rules: [{ effect: allow, from: ["spiffe://bench.example/**"] }]\n`;
    /** Applies a policy through B; each agent's time from the call until it had the revision. */
    const change = async (name: string): Promise<{ rev: number; t0: number; applyMs: number; lat: (on?: 0 | 1) => number[] }> => {
      const t0 = performance.now();
      const rev = (await api(b, 'POST', '/v1/policies', { yaml: yaml(name) }))['revision'] as number;
      const applyMs = performance.now() - t0;
      return {
        rev,
        t0,
        applyMs,
        lat: (on) => sims.flatMap((s) => (s.had.has(rev) && (on === undefined || s.startedOn === on) ? [s.had.get(rev)! - t0] : [])).sort((x, y) => x - y),
      };
    };
    // The baseline: the same change through B with both replicas up.
    const before = await change('before-kill');
    await until(`every agent at revision ${before.rev}`, () => sims.every((s) => s.had.has(before.rev)));
    const baseline = before.lat();

    // Load during the kill: the workloads, and the admin writer on both replicas.
    let calls = 0;
    let callsAfterKill = 0;
    const failures: string[] = [];
    const acknowledged: Array<{ id: string; beforeKill: boolean }> = [];
    const writer = new HttpsAgent({ ca, keepAlive: true });
    const loads = [
      ...workloads.map(async (c, j) => {
        for (let i = 0; !stopping; i++) {
          try {
            const ctx = await c.fetchX509Context();
            if (ctx.svids[0]?.spiffeId !== `spiffe://bench.example/failover/w${j}`) throw new Error(`got ${ctx.svids[0]?.spiffeId}`);
            const jwt = await c.fetchJwtSvids([`aud-${i}`]);
            if (jwt.length !== 1) throw new Error(`${jwt.length} JWT-SVIDs`);
            calls += 2;
            if (performance.now() > killedAt) callsAfterKill += 2;
          } catch (err) {
            if (!stopping) failures.push((err as Error).message);
          }
          await sleep(20);
        }
      }),
      (async () => {
        for (let i = 0; !stopping; i++) {
          const id = `spiffe://bench.example/acked/${i}`;
          const sentAt = performance.now();
          const ok = await call(
            servers[i % 2]!.url,
            writer,
            'POST',
            '/v1/entries',
            { spiffeId: id, parentId: 'spiffe://bench.example/writ/agent/nowhere', selectors: [`unix:uid:${i}`] },
            token,
          ).then(
            () => true,
            () => false,
          );
          if (ok) acknowledged.push({ id, beforeKill: sentAt < killedAt });
          await sleep(10);
        }
      })(),
    ];
    await sleep(3000);

    killedAt = performance.now();
    process.kill(a.pid, 'SIGKILL');
    // Wall-clock time of the kill: to line it up with pg_stat_activity / pg_locks samples taken beside the run.
    const killedWall = new Date().toISOString();
    const afterKill = await change('after-kill');
    const onA = sims.filter((s) => s.startedOn === 0);
    await until('every agent of A back through B', () => onA.every((s) => s.backOnB !== undefined));
    await until(`every agent at revision ${afterKill.rev}`, () => sims.every((s) => s.had.has(afterKill.rev)));
    const realAcked = new Map<string, number>();
    await until('the real agents acknowledging through B', async () => {
      const st = (await api(b, 'GET', '/v1/policy/status')) as { agents: Array<{ spiffeId: string; revision: number }> };
      for (const x of st.agents)
        if (/\/real-\d+$/.test(x.spiffeId) && x.revision >= afterKill.rev) realAcked.set(x.spiffeId, realAcked.get(x.spiffeId) ?? performance.now() - killedAt);
      return realAcked.size === nReal;
    });
    await sleep(2000); // the workloads keep fetching after the move too
    stopping = true;
    for (const s of sims) for (const c of s.conns) c.destroy();
    await Promise.allSettled([...loops, ...loads]);
    writer.destroy();

    // Every acknowledged write, read back through B.
    const listed = new Set<string>();
    let pageToken = '';
    do {
      const page = await api(b, 'GET', `/v1/entries?pageSize=1000${pageToken ? `&pageToken=${pageToken}` : ''}`);
      for (const e of page['entries'] as Array<{ spiffeId: string }>) listed.add(e.spiffeId);
      pageToken = (page['nextPageToken'] as string | undefined) ?? '';
    } while (pageToken);
    const lost = acknowledged.filter((w) => !listed.has(w.id));

    const back = onA.map((s) => (s.backOnB ?? Number.NaN) - killedAt).sort((x, y) => x - y);
    const after = afterKill.lat();
    const ms = (x: number | undefined): string => (x === undefined || Number.isNaN(x) ? 'n/a' : `${fmt(x)} ms`);
    const dist = (xs: number[]): string => `p50 ${ms(percentile(xs, 50))}, p99 ${ms(percentile(xs, 99))}, max ${ms(xs.at(-1))}`;
    row('measurement', 'result', 'baseline (same run)', 'ratio', 'target');
    row('Workload API calls failed', `${failures.length} of ${fmt(calls + failures.length)}`, `${fmt(callsAfterKill)} calls after the kill`, '', '0');
    row(`agents of A: first sync through B`, ms(back.at(-1)), dist(back), `${back.filter((x) => !Number.isNaN(x)).length}/${onA.length}`, 'max <= 10 s');
    row(
      `policy via B -> all ${fmt(n)} agents`,
      `max ${ms(after.at(-1))}`,
      `max ${ms(baseline.at(-1))} before the kill`,
      `x${((after.at(-1) ?? Number.NaN) / (baseline.at(-1) ?? Number.NaN)).toFixed(1)}`,
      'max <= 10 s',
    );
    console.log(`   after the kill: ${dist(after)} (${after.length}/${n}); before: ${dist(baseline)} (${baseline.length}/${n})`);
    // B's own agents never moved: what the change itself cost them, apart from the reconnections.
    console.log(
      `   B's own agents: after the kill ${dist(afterKill.lat(1))}; before ${dist(before.lat(1))}; the apply call through B took ${ms(afterKill.applyMs)} after the kill, ${ms(before.applyMs)} before (A killed at ${killedWall})`,
    );
    row(
      'real agents acknowledged via B',
      [...realAcked.values()]
        .sort((x, y) => x - y)
        .map((t) => ms(t))
        .join(', ') || 'none',
      '',
      `${realAcked.size}/${nReal}`,
      '<= 10 s',
    );
    row(
      'acknowledged writes lost',
      `${lost.length} of ${fmt(acknowledged.length)}`,
      `${fmt(acknowledged.filter((w) => w.beforeKill).length)} acknowledged before the kill`,
      '',
      '0',
    );
    for (const f of [...new Set(failures)].slice(0, 5)) console.log(`   failed call: ${f}`);
    for (const [k, v] of syncErrors) console.log(`   sync answer ${k} x${v}`);
    console.log(`   load average at the end: ${load()}`);
  } catch (err) {
    console.log(`   FAILED: ${(err as Error).stack}`);
    throw err;
  } finally {
    stopping = true;
    for (const s of sims) for (const c of s.conns) c.destroy();
    for (const c of workloads) c.close();
    for (const c of children) c.kill();
    for (const s of servers) s.stop();
    admin?.destroy();
    // The drain of B (SIGTERM) ends before its database goes.
    await until('the replicas to exit', () => servers.every((s) => !alive(s.pid)), 15_000);
    rmSync(work, { recursive: true, force: true });
    await pgAdmin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  }
}
