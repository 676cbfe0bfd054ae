/**
 * Soak (issue 16): one `writ server` process (SQLite; BENCH_SOAK_DB=postgres for a fresh
 * PostgreSQL database) under a steady mixed load for BENCH_SOAK_MINUTES (default 10):
 * BENCH_SOAK_AGENTS simulated agents (default 1,000; the propagation benchmark's: join-token
 * attestation, mTLS with their own SVIDs, lean long-poll sync) each reporting decisions,
 * BENCH_SOAK_DECISIONS decisions/s in all (default 5,000, batches of 50), an admin writer creating
 * and deleting entries through the API at BENCH_SOAK_WRITES/s (default 50) and a policy apply
 * every 10 s. Sampled: the server's RSS (/proc/PID/status VmRSS) every 5 s, and per policy change
 * the time from the apply call until each agent has the new revision.
 *
 * Printed: a row per minute, then a verdict. The baseline, measured in the same run, is minute 1
 * (warm-up): RSS after the warm-up (the first 2 minutes; half the run when it is shorter than 4)
 * must stay within ±10% of its value at the end of the warm-up, errors must be 0, and the p99 of
 * the last minute is set against the first minute after the warm-up (drift).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent as HttpsAgent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { ConnectionOptions } from 'node:tls';
import { AGENT_PATHS, encodeSyncQuery } from '@writ/protocol';
import { attestSimAgents, call, PG_URL, pgAdmin, startServer } from './propagation.ts';
import { fmt, LeanConn, percentile } from './util.ts';

const BATCH = 50;
const POLICY_EVERY_MS = 10_000;
/** A policy change not at every agent by then counts as an error. */
const POLICY_DEADLINE_MS = 10_000;

interface Sim {
  spiffeId: string;
  sync: LeanConn;
  report: LeanConn;
  polls: number;
  state: { since: number; bundles: string; policy: number; quarantine: string };
}

interface Minute {
  rss: number[];
  writes: number;
  writeMs: number[];
  decisions: number;
  changes: number;
  received: number[];
  errors: number;
}

const env = (k: string, d: number): number => {
  const v = process.env[k];
  return v === undefined || v === '' ? d : Number(v);
};

const rssKb = (pid: number): number => {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
};

export async function run(): Promise<void> {
  const minutes = env('BENCH_SOAK_MINUTES', 10);
  const n = env('BENCH_SOAK_AGENTS', 1000);
  const writesPerS = env('BENCH_SOAK_WRITES', 50);
  const decisionsPerS = env('BENCH_SOAK_DECISIONS', 5000);
  const onPg = process.env['BENCH_SOAK_DB'] === 'postgres';
  const warmupMin = minutes >= 4 ? 2 : minutes / 2;
  console.log(
    `\nSoak benchmark: ${minutes} min, ${fmt(n)} simulated agents, ${writesPerS} admin writes/s, a policy apply every 10 s, ${fmt(decisionsPerS)} decisions/s; server on ${onPg ? 'PostgreSQL' : 'SQLite'}\n`,
  );

  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-soak-'));
  const dbName = `writ_bench_soak_${process.pid}`;
  let dbArgs: string[] = [];
  if (onPg) {
    await pgAdmin(`CREATE DATABASE ${dbName}`);
    const u = new URL(PG_URL);
    u.pathname = `/${dbName}`;
    dbArgs = ['--db', u.toString()];
  }
  const server = await startServer(dir, dbArgs);
  const ca = readFileSync(join(dir, 'bundle.pem'), 'utf8');
  const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
  const admin = new HttpsAgent({ ca, keepAlive: true, maxSockets: 32 });
  // The policy applies on a connection of their own, new each time: not queued behind the admin
  // writes, and not sent into a keep-alive connection the server is closing (idle 10 s > its 5 s).
  const policyAgent = new HttpsAgent({ ca });
  const sims: Sim[] = [];
  let stopping = false;
  try {
    const setup0 = performance.now();
    const { hostname, port } = new URL(server.url);
    for (const tls of await attestSimAgents(server.url, admin, ca, token, n, (i) => `soak-${i}`)) {
      const opts: ConnectionOptions = { host: hostname, port: Number(port), ca, ...tls, servername: 'localhost' };
      sims.push({
        spiffeId: '',
        sync: new LeanConn(opts),
        report: new LeanConn(opts),
        polls: 0,
        state: { since: 0, bundles: '', policy: 0, quarantine: '' },
      });
    }
    const listed = (await call(server.url, admin, 'GET', '/v1/agents', undefined, token))['agents'] as Array<{ spiffeId: string }>;
    for (const [i, s] of sims.entries()) s.spiffeId = listed[i % listed.length]!.spiffeId;
    console.log(
      `   ${fmt(n)} agents attested in ${((performance.now() - setup0) / 1000).toFixed(0)} s; server pid ${server.pid}, RSS ${fmt(rssKb(server.pid) / 1024)} MB`,
    );

    const t0 = performance.now();
    const end = t0 + minutes * 60_000;
    const buckets: Minute[] = Array.from({ length: Math.ceil(minutes) }, () => ({
      rss: [],
      writes: 0,
      writeMs: [],
      decisions: 0,
      changes: 0,
      received: [],
      errors: 0,
    }));
    const bucket = (t = performance.now()): Minute => buckets[Math.min(buckets.length - 1, Math.max(0, Math.floor((t - t0) / 60_000)))]!;
    const errorKinds = new Map<string, number>();
    const fail = (kind: string, t?: number): void => {
      if (stopping) return;
      bucket(t).errors++;
      errorKinds.set(kind, (errorKinds.get(kind) ?? 0) + 1);
    };

    // Policy changes: revision -> when its apply call began, and when each agent first had it (or a later one).
    const applied = new Map<number, number>();
    const arrivals = new Map<number, number[]>();
    const syncLoop = async (s: Sim): Promise<void> => {
      while (!stopping) {
        const q = encodeSyncQuery({
          since: s.state.since,
          wait: s.polls === 0 ? 0 : 25,
          bundles: s.state.bundles,
          policy: s.state.policy,
          quarantine: s.state.quarantine,
          lean: true,
        });
        let r: { status: number; body: Buffer };
        try {
          r = await s.sync.request('GET', `${AGENT_PATHS.sync}?${q}`);
        } catch {
          if (!stopping) fail('sync: connection closed');
          continue;
        }
        const now = performance.now();
        if (r.status !== 200) {
          fail(`sync: HTTP ${r.status}`);
          await new Promise((res) => setTimeout(res, 1000));
          continue;
        }
        s.polls++;
        const a = JSON.parse(r.body.toString()) as Record<string, unknown>;
        const pol = a['policy'] as { revision: number } | undefined;
        const rev = pol?.revision ?? s.state.policy;
        for (let v = s.state.policy + 1; v <= rev; v++) (arrivals.get(v) ?? arrivals.set(v, []).get(v)!).push(now);
        const qu = a['quarantine'] as { version: string };
        s.state = { since: a['revision'] as number, bundles: a['bundlesVersion'] as string, policy: rev, quarantine: qu.version };
      }
    };
    const loops = sims.map(syncLoop);
    while (sims.some((s) => s.polls < 1)) await new Promise((r) => setTimeout(r, 50));

    // Decisions: batches of BATCH, the agents taking turns; an agent whose last batch is still unanswered passes its turn on.
    let decisionsSent = 0;
    let decisionsSkipped = 0;
    let nextAgent = 0;
    let seq = 0;
    const postBatch = (): void => {
      let s: Sim | undefined;
      for (let tries = 0; tries < n && !s; tries++) {
        const c = sims[nextAgent++ % n]!;
        if (!c.report.busy) s = c;
      }
      if (!s) return void decisionsSkipped++;
      const at = Date.now();
      const decisions = Array.from({ length: BATCH }, (_, i) => ({
        id: `soak-${process.pid}-${seq++}`,
        at,
        from: `spiffe://bench.example/ns/a/sa/c${i % 7}`,
        to: 'spiffe://bench.example/ns/a/sa/b',
        action: 'GET /v1/items',
        decision: i % 10 === 0 ? 'deny' : 'allow',
        reason: i % 10 === 0 ? 'NO_MATCHING_ALLOW' : 'ALLOW_RULE',
        policyRevision: s.state.policy,
        latencyUs: 20,
      }));
      decisionsSent += BATCH;
      s.report.request('POST', AGENT_PATHS.decisions, JSON.stringify({ decisions, dropped: 0 })).then(
        (r) => {
          if (r.status !== 200) return fail(`decisions: HTTP ${r.status} ${r.body.toString().slice(0, 120)}`);
          bucket().decisions += (JSON.parse(r.body.toString()) as { stored: number }).stored;
        },
        () => fail('decisions: connection closed'),
      );
    };

    // Admin writes: entries created, and the oldest deleted once 100 exist, on schedule (open loop).
    const live: string[] = [];
    let writeSeq = 0;
    const write = (): void => {
      const k = writeSeq++;
      const began = performance.now();
      const op =
        live.length > 100
          ? call(server.url, admin, 'DELETE', `/v1/entries/${live.shift()!}`, undefined, token)
          : call(
              server.url,
              admin,
              'POST',
              '/v1/entries',
              { spiffeId: `spiffe://bench.example/soak/w${k}`, parentId: sims[k % n]!.spiffeId, selectors: [`unix:uid:${1000 + (k % 50)}`] },
              token,
            ).then((e) => void live.push(e['id'] as string));
      op.then(
        () => {
          const b = bucket(began);
          b.writes++;
          b.writeMs.push(performance.now() - began);
        },
        (e: Error) => fail(`admin write: ${e.message.slice(0, 120)}`, began),
      );
    };

    const policyYaml = (i: number): string =>
      `apiVersion: writ.dev/v1\nkind: AccessPolicy\nmetadata: { name: soak }\nspec:\n  to: spiffe://bench.example/ns/a/sa/b\n  rules: [{ effect: allow, from: ["spiffe://bench.example/ns/a/sa/c${i}"] }]\n`;
    let policyN = 0;
    const applyPolicy = (): void => {
      const began = performance.now();
      const i = policyN++;
      call(server.url, policyAgent, 'POST', '/v1/policies', { yaml: policyYaml(i) }, token).then(
        (r) => {
          const rev = (r['revision'] as number | undefined) ?? i + 1;
          applied.set(rev, began);
          bucket(began).changes++;
        },
        (e: Error) => fail(`policy apply: ${e.message.slice(0, 120)}`, began),
      );
    };

    // One scheduler for everything: each tick sends what has fallen due since t0.
    let batchesDone = 0;
    let writesDone = 0;
    let policiesDone = 0;
    let rssDone = 0;
    const batchesPerS = decisionsPerS / BATCH;
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = performance.now();
        const el = (Math.min(now, end) - t0) / 1000;
        while (batchesDone < el * batchesPerS) postBatch(), batchesDone++;
        while (writesDone < el * writesPerS) write(), writesDone++;
        while (policiesDone * (POLICY_EVERY_MS / 1000) <= el && now < end) applyPolicy(), policiesDone++;
        while (rssDone * 5 <= el && now < end) bucket().rss.push(rssKb(server.pid)), rssDone++;
        if (now >= end) return resolve();
        setTimeout(tick, 5);
      };
      tick();
    });
    // The last change's deadline, then stop.
    await new Promise((r) => setTimeout(r, POLICY_DEADLINE_MS));
    stopping = true;
    for (const s of sims) s.sync.destroy(), s.report.destroy();
    await Promise.allSettled(loops);

    // Per policy change: every agent within the deadline, else an error in its minute.
    for (const [rev, began] of applied) {
      const lat = (arrivals.get(rev) ?? []).map((t) => t - began).filter((ms) => ms <= POLICY_DEADLINE_MS);
      const b = bucket(began);
      b.received.push(...lat);
      if (lat.length < n) {
        b.errors++;
        errorKinds.set('policy change not at every agent within 10 s', (errorKinds.get('policy change not at every agent within 10 s') ?? 0) + 1);
      }
    }

    const mb = (kb: number): string => `${(kb / 1024).toFixed(0)} MB`;
    const line = (...c: string[]): void =>
      console.log(
        `${c[0]!.padEnd(7)} ${c[1]!.padStart(9)} ${c[2]!.padStart(9)} ${c[3]!.padStart(9)} ${c[4]!.padStart(10)} ${c[5]!.padStart(11)} ${c[6]!.padStart(8)} ${c[7]!.padStart(9)} ${c[8]!.padStart(9)} ${c[9]!.padStart(7)}`,
      );
    line('minute', 'RSS end', 'RSS max', 'writes/s', 'write p99', 'decisions/s', 'changes', 'recv p50', 'recv p99', 'errors');
    const p = (xs: number[], q: number): number =>
      xs.length
        ? percentile(
            [...xs].sort((a, b) => a - b),
            q,
          )
        : Number.NaN;
    const durS = (i: number): number => Math.min(60, minutes * 60 - i * 60);
    for (const [i, b] of buckets.entries())
      line(
        `${i + 1}${i < warmupMin ? ' (w)' : ''}`,
        mb(b.rss.at(-1) ?? 0),
        mb(Math.max(0, ...b.rss)),
        (b.writes / durS(i)).toFixed(1),
        `${p(b.writeMs, 99).toFixed(0)} ms`,
        fmt(b.decisions / durS(i)),
        String(b.changes),
        `${p(b.received, 50).toFixed(0)} ms`,
        `${p(b.received, 99).toFixed(0)} ms`,
        String(b.errors),
      );

    // Verdict: RSS after the warm-up against its value at the end of the warm-up; errors; p99 drift.
    const samples = buckets.flatMap((b) => b.rss);
    const ref = samples[Math.ceil((warmupMin * 60) / 5)] ?? samples.at(-1)!;
    const after = samples.slice(Math.ceil((warmupMin * 60) / 5));
    const lo = Math.min(...after) / ref - 1;
    const hi = Math.max(...after) / ref - 1;
    const rssFlat = lo >= -0.1 && hi <= 0.1;
    const errors = buckets.reduce((s, b) => s + b.errors, 0);
    const firstAfter = buckets[Math.ceil(warmupMin)] ?? buckets.at(-1)!;
    const last = buckets.at(-1)!;
    const base = buckets[0]!;
    const drift = p(last.received, 99) / p(firstAfter.received, 99);
    console.log(
      `\n   baseline (minute 1, warm-up, same run): RSS ${mb(base.rss.at(-1) ?? 0)}, received p99 ${p(base.received, 99).toFixed(0)} ms; ` +
        `last minute against it: RSS x${((last.rss.at(-1) ?? 0) / (base.rss.at(-1) ?? 1)).toFixed(2)}, p99 x${(p(last.received, 99) / p(base.received, 99)).toFixed(2)}`,
    );
    console.log(
      `   totals: ${fmt(decisionsSent)} decisions sent (${decisionsSkipped} batches passed over: every agent still busy), ${fmt(writesDone)} admin writes, ${policiesDone} policy changes`,
    );
    for (const [k, v] of errorKinds) console.log(`   error: ${k} x${v}`);
    console.log(
      `VERDICT: RSS after warm-up ${(lo * 100).toFixed(1)}%..+${(hi * 100).toFixed(1)}% of ${mb(ref)} (${rssFlat ? 'flat, within ±10%' : 'NOT within ±10%'}); ` +
        `errors ${errors}; p99 received drift x${drift.toFixed(2)} (last minute against minute ${Math.ceil(warmupMin) + 1}) -> ${rssFlat && errors === 0 ? 'PASS' : 'FAIL'}`,
    );
  } finally {
    stopping = true;
    for (const s of sims) s.sync.destroy(), s.report.destroy();
    server.stop();
    admin.destroy();
    rmSync(dir, { recursive: true, force: true });
    if (onPg) {
      await new Promise((r) => setTimeout(r, 500));
      await pgAdmin(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    }
  }
}
