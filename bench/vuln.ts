/**
 * Vulnerable-image benchmark (issue 13), on SQLite and on PostgreSQL (a fresh database per run,
 * dropped after): a corpus of Trivy JSON reports (bench/vuln/corpus.ts: 10,000 app images of 100
 * packages each on 105 shared bases, ~2,300 CVEs with a skewed spread) and 100,000 running
 * workloads (1,000 agents × 100).
 *
 * - **Ingest**: reports per second through `parseReport` + `store.putReport`, and through
 *   `POST /v1/reports` on a real server process for a sample of new images; baseline in the same
 *   run: `JSON.parse` of the same bytes (and `jq empty` reading the same files).
 * - **Workloads**: `store.putAgentWorkloads` for 1,000 agents × 100, first report and heartbeat.
 * - **affected CVE**: p50/p99 of the answer (`affectedAnswer`, the default page) over common and rare CVEs, and of
 *   `GET /v1/vulnerabilities/{id}/affected` on the server for a sample; beside it, what users do
 *   today over the same reports as files: `jq` selecting the reports that carry the CVE, a Node scan
 *   (read + JSON.parse each file), and `grep -l` (the floor: it reads bytes and parses nothing).
 *
 * `npm run bench -- vuln --quick`: 1,000 images and 10,000 workloads, for a smoke run.
 * `BENCH_DBS=sqlite` (or `postgres`) runs one database only; `BENCH_ANALYZE=0` measures `affected`
 * without running ANALYZE first. Needs jq (Debian's jq 1.6 here).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { openStore } from '@writ/server';
import type { WorkloadInput } from '../packages/server/src/store/types.ts';
import { parseReport } from '@writ/vuln';
import { AFFECTED_PAGE, affectedAnswer } from '../packages/server/src/vuln-answers.ts';
import { makeCorpus, teams, type CorpusImage } from './vuln/corpus.ts';
import { startServer } from './vuln/server.ts';
import { fmt, percentile, row } from './util.ts';

const QUICK = process.argv.includes('--quick');
const APPS = QUICK ? 1000 : Number(process.env['BENCH_IMAGES'] ?? 10_000);
const AGENTS = QUICK ? 100 : 1000;
const PER_AGENT = 100;
/** New images posted to the server (not in the store yet). */
const HTTP_REPORTS = QUICK ? 50 : 200;
const SAMPLE_CVES = QUICK ? 60 : 300;
const HTTP_CVES = QUICK ? 20 : 30;
/** Workloads stay "running" for a minute after their last report; the measurements take longer. */
const AHEAD_MS = 30 * 60_000;
const PG_URL = process.env['WRIT_TEST_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const DBS = (process.env['BENCH_DBS'] ?? 'sqlite,postgres').split(',');
const ANALYZE = process.env['BENCH_ANALYZE'] !== '0';

/** One statement on the store's database through a connection of its own (ANALYZE). */
async function rawExec(db: string, dataDir: string, sql: string): Promise<void> {
  if (db === 'sqlite') {
    const d = new DatabaseSync(join(dataDir, 'writ.db'));
    try {
      d.exec(sql);
    } finally {
      d.close();
    }
    return;
  }
  const c = new pg.Client({ connectionString: db });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** A number from the store's database through a connection of its own (the server's progress). */
async function rawCount(db: string, dataDir: string, sql: string): Promise<number> {
  if (db === 'sqlite') {
    const d = new DatabaseSync(join(dataDir, 'writ.db'), { readOnly: true });
    try {
      return Number((d.prepare(sql).get() as { n: number | bigint }).n);
    } finally {
      d.close();
    }
  }
  const c = new pg.Client({ connectionString: db });
  await c.connect();
  try {
    return Number((await c.query(sql)).rows[0].n);
  } finally {
    await c.end();
  }
}

const ms = (t: number): string => `${t.toFixed(t < 10 ? 2 : t < 100 ? 1 : 0)} ms`;
const stats = (times: number[]): { p50: number; p99: number; max: number } => {
  const s = [...times].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p99: percentile(s, 99), max: s[s.length - 1]! };
};

/** Workloads of agent `a`: 100 containers of app images (popular images run more replicas). */
function workloadsOf(a: number, images: readonly CorpusImage[]): WorkloadInput[] {
  return Array.from({ length: PER_AGENT }, (_, k) => {
    const n = a * PER_AGENT + k;
    // Replicas: image i runs about as often as its rank allows; every image runs somewhere for n >= images.
    const img = images[(n * 7919) % images.length]!;
    const team = teams[((n * 7919) % images.length) % teams.length]!;
    const svc = img.repository.slice(img.repository.lastIndexOf('/') + 1);
    return {
      key: `containerd://${n.toString(16).padStart(12, '0')}`,
      spiffeIds: [`spiffe://bench.example/ns/${team}/sa/${svc}`],
      containerId: n.toString(16).padStart(12, '0'),
      containerName: svc,
      podUid: `pod-${n}`,
      podName: `${svc}-${n.toString(36)}`,
      namespace: team,
      podOwner: `ReplicaSet/${svc}-7d9f`,
      imageDigest: img.digest,
      imageName: img.repository,
      labels: { team, app: svc },
      annotations: {},
      owner: team,
    };
  });
}

interface Baselines {
  /** CVE → ms of each way users scan files today. */
  readonly jq: Map<string, number>;
  readonly node: Map<string, number>;
  readonly grep: Map<string, number>;
}

async function measureDb(
  name: string,
  db: string,
  dataDir: string,
  stored: readonly CorpusImage[],
  bytes: readonly Buffer[],
  extra: readonly CorpusImage[],
  truth: ReadonlyMap<string, number>,
  sample: readonly string[],
  baseCves: readonly string[],
  base: Baselines,
  jsonParseRate: number,
): Promise<void> {
  const store = await openStore({ db, dataDir });
  try {
    // ---------------------------------------------------------------- ingest
    let parseMs = 0;
    let putMs = 0;
    const t0 = performance.now();
    for (const b of bytes) {
      let t = performance.now();
      const report = parseReport(b);
      parseMs += performance.now() - t;
      t = performance.now();
      const r = await store.putReport(report, Date.now());
      putMs += performance.now() - t;
      if (!r.created) throw new Error(`report of ${r.imageDigest} was not new`);
    }
    const totalS = (performance.now() - t0) / 1000;
    const rate = bytes.length / totalS;
    const rows = stored.length * 100;
    row(
      `${name}: ingest ${fmt(bytes.length)} reports (parse + putReport)`,
      `${fmt(rate)}/s`,
      `JSON.parse ${fmt(jsonParseRate)}/s`,
      `${(jsonParseRate / rate).toFixed(1)}x`,
      '(reported)',
    );
    row(
      '',
      `${fmt(rows / totalS)} pkg rows/s`,
      `parse ${(parseMs / 1000).toFixed(1)} s, store ${(putMs / 1000).toFixed(1)} s`,
      '',
      `total ${totalS.toFixed(1)} s`,
    );

    // ---------------------------------------------------------------- workloads
    let t = performance.now();
    const now0 = Date.now();
    for (let a = 0; a < AGENTS; a++) await store.putAgentWorkloads(`spiffe://bench.example/writ/agent/node-${a}`, `node-${a}`, workloadsOf(a, stored), now0);
    const firstS = (performance.now() - t) / 1000;
    const heartbeat = async (ahead = 0): Promise<number> => {
      const s = performance.now();
      const now = Date.now() + ahead;
      for (let a = 0; a < AGENTS; a++) {
        const r = await store.putAgentWorkloads(`spiffe://bench.example/writ/agent/node-${a}`, `node-${a}`, workloadsOf(a, stored), now);
        if (r.started !== 0 || r.ended !== 0) throw new Error(`heartbeat changed the set: ${JSON.stringify(r)}`);
      }
      return (performance.now() - s) / 1000;
    };
    const hbS = await heartbeat();
    const nW = AGENTS * PER_AGENT;
    row(
      `${name}: ${fmt(nW)} workloads (${fmt(AGENTS)} agents × ${PER_AGENT})`,
      `${fmt(nW / firstS)}/s`,
      `first report ${firstS.toFixed(1)} s`,
      '',
      '(reported)',
    );
    row('', `${fmt(nW / hbS)}/s`, `heartbeat ${hbS.toFixed(1)} s`, '', `${fmt(AGENTS / hbS)} agents/s`);
    // Reported once more (untimed) as if 30 minutes from now, so that all 100,000 stay "running now"
    // through every measurement below, however long it takes (in-process and on the server).
    await heartbeat(AHEAD_MS);
    const running = await store.listWorkloads({ running: true, now: Date.now(), limit: 10 });
    if (running.length !== 10) throw new Error(`expected running workloads, got ${running.length}`);

    // ---------------------------------------------------------------- affected, in-process
    // Planner statistics, as a deployment gets them: PostgreSQL's autovacuum analyzes a table after a
    // bulk load by itself; SQLite never does (BENCH_ANALYZE=0 measures without; see docs/benchmarks.md).
    if (ANALYZE) {
      t = performance.now();
      await rawExec(db, dataDir, 'ANALYZE');
      row(`${name}: ANALYZE`, ms(performance.now() - t), '', '', '');
    }
    // The answer users get (`writ vuln affected`, in-process): the default page of images with
    // where to fix, the owners' totals, at most 1,000 workload rows; the counts cover everything.
    const byCve = new Map<string, { ms: number; workloads: number }>();
    for (const c of sample.slice(0, 10)) await affectedAnswer(store, c, Date.now()); // warm-up
    for (const c of sample) {
      const s = performance.now();
      const a = await affectedAnswer(store, c, Date.now());
      const dt = performance.now() - s;
      const n = truth.get(c) ?? 0;
      if (a.counts.images !== n) throw new Error(`affected ${c}: ${a.counts.images} images, the corpus has ${n}`);
      if (a.images.length !== Math.min(n, AFFECTED_PAGE.limit)) throw new Error(`affected ${c}: a page of ${a.images.length} images`);
      // Every image runs in floor(100,000 / images) workloads or one more.
      if (a.counts.workloads < n * Math.floor(nW / stored.length)) throw new Error(`affected ${c}: ${a.counts.workloads} workloads running for ${n} images`);
      byCve.set(c, { ms: dt, workloads: a.counts.workloads });
    }
    // Every row (what the answer loaded before it was paged), for the four compared with the files.
    const allRows = new Map<string, number>();
    for (const c of baseCves) {
      const s = performance.now();
      await store.affected(c, Date.now());
      allRows.set(c, performance.now() - s);
    }
    const jqMed = stats(baseCves.map((c) => base.jq.get(c)!)).p50;
    const strata: [string, (n: number) => boolean][] = [
      [`all ${sample.length} CVEs`, () => true],
      ['CVEs in <= 100 images', (n) => n <= 100],
      ['CVEs in 101-1,000 images', (n) => n > 100 && n <= 1000],
      ['CVEs in > 1,000 images', (n) => n > 1000],
    ];
    for (const [label, pick] of strata) {
      const cs = sample.filter((c) => pick(truth.get(c) ?? 0));
      if (cs.length === 0) continue;
      const st = stats(cs.map((c) => byCve.get(c)!.ms));
      row(
        `${name}: affected answer, ${label} (${cs.length})`,
        `p50 ${ms(st.p50)}`,
        `jq median ${ms(jqMed)}`,
        `${fmt(jqMed / st.p50)}x`,
        'p99 <= 100 ms, >= 100x',
      );
      row('', `p99 ${ms(st.p99)}`, `max ${ms(st.max)}`, `${fmt(jqMed / st.p99)}x`, st.p99 <= 100 ? '✔' : '✘');
    }
    for (const c of baseCves) {
      const m = byCve.get(c)!;
      row(
        `  ${c} (${fmt(truth.get(c) ?? 0)} images)`,
        ms(m.ms),
        `jq ${ms(base.jq.get(c)!)}, node ${ms(base.node.get(c)!)}`,
        `${fmt(base.jq.get(c)! / m.ms)}x`,
        `${fmt(m.workloads)} workloads running; every row ${ms(allRows.get(c)!)}`,
      );
    }

    // ---------------------------------------------------------------- the same through a real server
    const server = await startServer(dataDir, db);
    try {
      {
        // A server starting on this inventory first evaluates the vulnerability events of every running
        // workload (vuln-events.ts) and records one exposure per (CVE, image, identity) at or above high:
        // the answers are measured after that, in the steady state (timed: it is a cost users see once).
        t = performance.now();
        let exposures = 0;
        while (performance.now() - t < 600_000 && (exposures = await rawCount(db, dataDir, 'SELECT COUNT(*) AS n FROM vuln_exposures')) === 0)
          await new Promise((r) => setTimeout(r, 250));
        row(
          `${name}: the server's first events evaluation`,
          `${((performance.now() - t) / 1000).toFixed(1)} s`,
          `${fmt(exposures)} exposures stored`,
          '',
          '(reported)',
        );
        // Stored is not done: the evaluation then logs an event per exposure. The answers are measured
        // once the server is idle (under 50 ms of CPU in a second), as a server between evaluations is.
        const cpuMs = (): number => {
          const f = readFileSync(`/proc/${server.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
          return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
        };
        const idleFrom = performance.now();
        for (let last = cpuMs(); performance.now() - idleFrom < 120_000; ) {
          await new Promise((r) => setTimeout(r, 1000));
          const now = cpuMs();
          if (now - last < 50) break;
          last = now;
        }
        row(`${name}: the server idle after it`, `${((performance.now() - idleFrom) / 1000).toFixed(1)} s later`, '', '', '(reported)');
        // A spread over the sample, common to rare.
        const bySpread = [...sample].sort((a, b) => (truth.get(b) ?? 0) - (truth.get(a) ?? 0));
        const httpCves = Array.from({ length: HTTP_CVES }, (_, k) => bySpread[Math.floor((k * bySpread.length) / HTTP_CVES)]!);
        const times: number[] = [];
        for (const c of httpCves.slice(-5)) await server.call('GET', `/v1/vulnerabilities/${c}/affected`);
        for (const c of httpCves) {
          const s = performance.now();
          const r = await server.call('GET', `/v1/vulnerabilities/${encodeURIComponent(c)}/affected`);
          times.push(performance.now() - s);
          if (r.status !== 200) throw new Error(`GET affected ${c}: ${r.status} ${r.body.toString().slice(0, 300)}`);
        }
        const st = stats(times);
        row(
          `${name}: GET …/affected, ${HTTP_CVES} CVEs`,
          `p50 ${ms(st.p50)}`,
          `in-process p50 ${ms(stats(httpCves.map((c) => byCve.get(c)!.ms)).p50)}`,
          '',
          'p99 <= 100 ms',
        );
        row('', `p99 ${ms(st.p99)}`, `max ${ms(st.max)}`, '', st.p99 <= 100 ? '✔' : '✘');
        const slowest = times.indexOf(st.max);
        row(
          '',
          `slowest: ${httpCves[slowest]}`,
          `${fmt(truth.get(httpCves[slowest]!) ?? 0)} images`,
          '',
          `in-process ${ms(byCve.get(httpCves[slowest]!)!.ms)}`,
        );
      }
      const docs = extra.map((e) => Buffer.from(JSON.stringify(e.doc)));
      await server.call('GET', '/v1/images?limit=1');
      const s = performance.now();
      for (const d of docs) {
        const r = await server.call('POST', '/v1/reports', d);
        if (r.status !== 201) throw new Error(`POST /v1/reports: ${r.status} ${r.body.toString().slice(0, 300)}`);
      }
      const httpRate = docs.length / ((performance.now() - s) / 1000);
      row(
        `${name}: POST /v1/reports, ${docs.length} new images`,
        `${fmt(httpRate)}/s`,
        `in-process ${fmt(rate)}/s`,
        `${(rate / httpRate).toFixed(2)}x`,
        '(reported)',
      );
    } finally {
      await server.stop();
    }
  } finally {
    await store.close();
  }
}

/** How long `fn` takes, in ms. */
function timed(fn: () => void): number {
  const s = performance.now();
  fn();
  return performance.now() - s;
}

export async function run(): Promise<void> {
  try {
    execFileSync('jq', ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error('the vuln benchmark needs jq for its baseline: apt-get install -y jq');
  }
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-vuln-'));
  try {
    let t = performance.now();
    const corpus = makeCorpus(APPS + HTTP_REPORTS);
    const stored = [...corpus.bases, ...corpus.apps.slice(0, APPS)];
    const extra = corpus.apps.slice(APPS);
    const truth = new Map<string, number>();
    for (const i of stored) for (const c of i.cves) truth.set(c, (truth.get(c) ?? 0) + 1);
    const bytes = stored.map((i) => Buffer.from(JSON.stringify(i.doc)));
    const files = join(dir, 'reports');
    mkdirSync(files);
    const paths = bytes.map((b, k) => {
      const p = join(files, `${String(k).padStart(5, '0')}.json`);
      writeFileSync(p, b);
      return p;
    });
    const mb = bytes.reduce((n, b) => n + b.length, 0) / 1e6;
    console.log(
      `\nVuln benchmark${QUICK ? ' (--quick)' : ''}: ${fmt(stored.length)} images (${fmt(APPS)} apps on ${corpus.bases.length} bases), ` +
        `${fmt(stored.length * 100)} package rows, ${fmt(truth.size)} CVEs, ${mb.toFixed(0)} MB of Trivy JSON; ` +
        `${fmt(AGENTS * PER_AGENT)} workloads (corpus made in ${((performance.now() - t) / 1000).toFixed(1)} s)\n`,
    );

    // Sample CVEs: the 20 most common, then a spread over the rest (most are in few images).
    const byCount = [...truth.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([c]) => c);
    const top = byCount.slice(0, 20);
    const rest = byCount.slice(20);
    const step = rest.length / (SAMPLE_CVES - top.length);
    const baseCves = [byCount[0]!, byCount[Math.floor(byCount.length / 10)]!, byCount[Math.floor(byCount.length / 2)]!, byCount[byCount.length - 1]!];
    const sample = [...new Set([...top, ...baseCves, ...Array.from({ length: SAMPLE_CVES - top.length }, (_, k) => rest[Math.floor(k * step)]!)])];
    // Common and rare interleaved, so that caches warm by neither.
    sample.sort((a, b) => (a < b ? -1 : 1));

    row('measurement', 'result', 'baseline (same run)', 'ratio', 'target');
    // ---------------------------------------------------------------- baselines over the files
    t = performance.now();
    for (const b of bytes) JSON.parse(b.toString('utf8'));
    const jsonParseRate = bytes.length / ((performance.now() - t) / 1000);
    const jqEmpty = timed(() => execFileSync('jq', ['empty', ...paths]));
    row(`files: JSON.parse ${fmt(bytes.length)} reports`, `${fmt(jsonParseRate)}/s`, `jq empty ${(jqEmpty / 1000).toFixed(1)} s`, '', '');
    const base: Baselines = { jq: new Map(), node: new Map(), grep: new Map() };
    for (const c of baseCves) {
      let jqOut = '';
      base.jq.set(
        c,
        timed(() => {
          jqOut = execFileSync(
            'jq',
            ['-c', '--arg', 'id', c, 'select(any(.Results[]?.Vulnerabilities[]?; .VulnerabilityID == $id)) | .Metadata.RepoDigests[0]', ...paths],
            { maxBuffer: 1 << 28, encoding: 'utf8' },
          );
        }),
      );
      let nodeHits = 0;
      base.node.set(
        c,
        timed(() => {
          for (const p of paths) {
            const doc = JSON.parse(readFileSync(p, 'utf8')) as { Results?: { Vulnerabilities?: { VulnerabilityID: string }[] }[] };
            if (doc.Results?.some((r) => r.Vulnerabilities?.some((v) => v.VulnerabilityID === c))) nodeHits++;
          }
        }),
      );
      let grepOut = '';
      base.grep.set(
        c,
        timed(() => {
          grepOut = execFileSync('grep', ['-rlF', `"${c}"`, files], { maxBuffer: 1 << 28, encoding: 'utf8' });
        }),
      );
      const jqHits = jqOut.trim().split('\n').filter(Boolean).length;
      const grepHits = grepOut.trim().split('\n').filter(Boolean).length;
      if (jqHits !== truth.get(c) || nodeHits !== truth.get(c) || grepHits !== truth.get(c))
        throw new Error(`${c}: jq ${jqHits}, node ${nodeHits}, grep ${grepHits} images; the corpus has ${truth.get(c)}`);
      row(
        `files: ${c} (${fmt(truth.get(c)!)} images)`,
        `jq ${ms(base.jq.get(c)!)}`,
        `node scan ${ms(base.node.get(c)!)}`,
        '',
        `grep -l ${ms(base.grep.get(c)!)}`,
      );
    }

    for (const which of DBS) {
      if (which === 'sqlite') {
        const d = join(dir, 'sqlite');
        mkdirSync(d);
        await measureDb('SQLite', 'sqlite', d, stored, bytes, extra, truth, sample, baseCves, base, jsonParseRate);
      } else if (which === 'postgres') {
        const name = `writ_bench_vuln_${process.pid}`;
        const admin = new pg.Client({ connectionString: PG_URL });
        await admin.connect();
        await admin.query(`CREATE DATABASE ${name}`);
        try {
          const d = join(dir, 'postgres');
          mkdirSync(d);
          const u = new URL(PG_URL);
          u.pathname = `/${name}`;
          await measureDb('Postgres', u.toString(), d, stored, bytes, extra, truth, sample, baseCves, base, jsonParseRate);
        } finally {
          await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
          await admin.end();
        }
      } else throw new Error(`BENCH_DBS: unknown database "${which}" (sqlite, postgres)`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
