/**
 * Dashboard benchmark (issue 15): the service graph of 5,000 identities and 50,000 edges in
 * headless Chromium against a real `writ server` (SQLite). Measured with the browser's own clocks:
 * the time from navigation to the `writ:graph-drawn` performance mark (first frame of the graph
 * handed to the screen), and frames per second (requestAnimationFrame) while the graph is panned by
 * mouse drags on sigma's canvas. Baselines in the same run: the same page with an empty graph (a
 * namespace filter matching nothing), and the raw fetch + JSON parse of the graph answer.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Page } from 'playwright-core';
import { openStore } from '@writ/server';
import { foldGraph, foldGraphColumns } from '../packages/server/src/api/graph-routes.ts';
import type { DecisionRecord } from '../packages/server/src/store/types.ts';
import { row } from './util.ts';
import { startServer } from './vuln/server.ts';
import { readFileSync } from 'node:fs';

const CHROMIUM = '/usr/bin/chromium';
const TD = 'bench.example';
// BENCH_DASHBOARD_SCALE=0.1: a tenth of the graph, for a quick look.
const SCALE = Number(process.env['BENCH_DASHBOARD_SCALE'] ?? 1);
const IDENTITIES = Math.round(5000 * SCALE);
const EDGES = Math.round(50_000 * SCALE);
const progress = (what: string): void => void process.stderr.write(`dashboard bench: ${what}\n`);
const NAMESPACES = 50;

const id = (i: number): string => `spiffe://${TD}/ns/ns${i % NAMESPACES}/sa/svc${i}`;

/** 50,000 distinct (caller, destination) edges over 5,000 identities, one decision each; 1 in 20 a deny, 1 in 50 would-deny. */
function decisions(now: number): DecisionRecord[] {
  const out: DecisionRecord[] = [];
  const seen = new Set<string>();
  let x = 12345;
  // A 32-bit LCG in integer arithmetic (Math.imul): the same graph every run.
  const rnd = (): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0), x / 2 ** 32);
  while (out.length < EDGES) {
    // Calls mostly stay in their namespace's neighbourhood, as services do.
    const a = Math.floor(rnd() * IDENTITIES);
    const b = rnd() < 0.7 ? (a + NAMESPACES * (1 + Math.floor(rnd() * 20))) % IDENTITIES : Math.floor(rnd() * IDENTITIES);
    if (a === b || seen.has(`${a}>${b}`)) continue;
    seen.add(`${a}>${b}`);
    const n = out.length;
    const decision = n % 20 === 0 ? 'deny' : n % 50 === 1 ? 'audit-would-deny' : 'allow';
    out.push({
      id: `bench-${n}`,
      at: now - Math.floor(rnd() * 1_800_000),
      from: id(a),
      to: id(b),
      action: 'GET /v1/items',
      decision,
      reason: decision === 'deny' ? 'NO_MATCHING_ALLOW' : 'ALLOW_RULE',
      policyRevision: 1,
      rule: decision === 'deny' ? '' : `ns${b % NAMESPACES}#0`,
      reporter: `spiffe://${TD}/writ/agent/bench`,
    });
  }
  return out;
}

/**
 * CPU time (ms, user + system) used so far by the processes under `root` (itself included), from
 * /proc: what a load costs whatever the machine's load average (on a shared, loaded machine the
 * wall time is mostly waiting for a core). `skip` and its descendants are left out, and `root`
 * itself unless `withRoot`.
 */
function cpuMs(root: number, skip?: number, withRoot = true): number {
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // After the command in parentheses: state, ppid, ..., utime (14th field), stime (15th).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    parent.set(Number(name), Number(f[1]));
    ticks.set(Number(name), Number(f[11]) + Number(f[12]));
  }
  const under = (pid: number): boolean => {
    for (let p: number | undefined = pid; p !== undefined && p > 0; p = parent.get(p)) {
      if (p === skip) return false;
      if (p === root) return true;
    }
    return false;
  };
  let sum = 0;
  for (const [pid, t] of ticks) if (under(pid) && (withRoot || pid !== root)) sum += t;
  return sum * 10; // USER_HZ is 100 on Linux
}

/** The phases of a load, in the order they happen: [name, ms]. */
type Phases = [string, number][];

/**
 * Navigates to `/ui?query#graph` (the session resumes) and waits for the graph mark: ms since
 * navigation start, and where they went, from the page's performance marks, the resource timing of
 * the `GET /v1/graph` and the server's own Server-Timing on it.
 */
async function drawTime(page: Page, url: string, query: string): Promise<{ ms: number; edges: number; phases: Phases }> {
  await page.goto(`${url}/ui?${query}#graph`);
  await page.waitForFunction(() => performance.getEntriesByName('writ:graph-drawn').length > 0, undefined, { timeout: 120_000 });
  return page.evaluate(() => {
    const at = (name: string): number => performance.getEntriesByName(name)[0]?.startTime ?? Number.NaN;
    const res = performance.getEntriesByType('resource').find((r) => r.name.includes('/v1/graph')) as PerformanceResourceTiming | undefined;
    const server = new Map((res?.serverTiming ?? []).map((t) => [t.name, t.duration]));
    const phases: [string, number][] = [
      ['page, script and session until the graph is asked for', at('writ:graph-fetch')],
      ['request sent -> first byte of the answer', res ? res.responseStart - res.requestStart : Number.NaN],
    ];
    for (const [name, d] of server) phases.push([`  server: ${name}`, d]);
    phases.push(
      ['answer transferred', res ? res.responseEnd - res.responseStart : Number.NaN],
      ['answer decoded (text + JSON.parse)', res ? at('writ:graph-fetched') - res.responseEnd : Number.NaN],
      ['layout', at('writ:graph-layout') - at('writ:graph-fetched')],
      ['graph built (graphology)', at('writ:graph-built') - at('writ:graph-layout')],
      ['sigma created (index, first render)', at('writ:graph-rendered') - at('writ:graph-built')],
      ['overview picture captured', at('writ:graph-captured') - at('writ:graph-rendered')],
      ['busiest-edges list drawn', at('writ:graph-listed') - at('writ:graph-captured')],
      ['-> next animation frame (shown)', at('writ:graph-drawn') - at('writ:graph-listed')],
    );
    return {
      ms: at('writ:graph-drawn'),
      edges: Number(document.querySelector<HTMLElement>('#graph')?.dataset['drawn'] ?? 0),
      phases,
    };
  });
}

interface Pan {
  /** Animation frames per second while the pointer moved. */
  fps: number;
  /** The longest gap between two frames during the drag (ms). */
  worstFrameMs: number;
  /** From the release of the button to the first frame after the page is free again (ms). */
  settleMs: number;
}

/**
 * A real drag: the pointer pressed on the graph and moved 4 px at a time, at a mouse's 125 Hz, for
 * `ms`, through the browser's input pipeline (CDP Input events, as a user's mouse), then released.
 * Frames are counted in the page with requestAnimationFrame: a frame the main thread could not
 * produce (busy drawing) is not counted.
 */
let shot = 0;
async function pan(page: Page, ms: number): Promise<Pan> {
  const box = (await page.locator('#graph canvas.sigma-mouse').boundingBox())!;
  let x = box.x + box.width / 3;
  const y = box.y + box.height / 2;
  await page.mouse.move(x, y);
  await page.evaluate(() => {
    const w = window as unknown as { benchFrames: number[]; benchStop: boolean };
    w.benchFrames = [];
    w.benchStop = false;
    const step = (t: number): void => {
      w.benchFrames.push(t);
      if (!w.benchStop) requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  });
  await page.mouse.down();
  const started = await page.evaluate(() => performance.now());
  const until = Date.now() + ms;
  let dir = 4;
  while (Date.now() < until) {
    x += dir;
    if (x > box.x + box.width - 20 || x < box.x + 20) dir = -dir;
    await page.mouse.move(x, y);
    await new Promise((r) => setTimeout(r, 8));
  }
  const ended = await page.evaluate(() => performance.now());
  // BENCH_DASHBOARD_SHOTS=DIR: the graph before the release and after the redraw, to compare by eye.
  const shots = process.env['BENCH_DASHBOARD_SHOTS'];
  if (shots) await page.locator('#graph').screenshot({ path: join(shots, `drag-${shot}.png`) });
  await page.mouse.up();
  const released = await page.evaluate(() => performance.now());
  // Two frames after the release: the first is where the page redraws, the second starts once it is done.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  if (shots) await page.locator('#graph').screenshot({ path: join(shots, `released-${shot++}.png`) });
  return page.evaluate(
    ({ started, ended, released }) => {
      const w = window as unknown as { benchFrames: number[]; benchStop: boolean };
      w.benchStop = true;
      const during = w.benchFrames.filter((t) => t >= started && t <= ended);
      let worst = 0;
      for (let i = 1; i < during.length; i++) worst = Math.max(worst, during[i]! - during[i - 1]!);
      const after = w.benchFrames.filter((t) => t > released);
      const span = during.length > 1 ? during[during.length - 1]! - during[0]! : ended - started;
      return { fps: ((during.length - 1) * 1000) / span, worstFrameMs: worst, settleMs: (after[1] ?? after[0] ?? released) - released };
    },
    { started, ended, released },
  );
}

/** Frames per second with nothing moving: what the page's own work leaves of the frame rate. */
function idleFps(page: Page, ms: number): Promise<number> {
  return page.evaluate(async (ms) => {
    let frames = 0;
    const start = performance.now();
    await new Promise<void>((done) => {
      const step = (t: number): void => {
        frames++;
        if (t - start < ms) requestAnimationFrame(step);
        else done();
      };
      requestAnimationFrame(step);
    });
    return (frames * 1000) / (performance.now() - start);
  }, ms);
}

/** The raw fetch and JSON parse of the graph answer (the columns the page asks for), in the page: the floor under any drawing. */
function fetchTime(page: Page, query: string): Promise<number> {
  return page.evaluate(async (q) => {
    const t = performance.now();
    const r = await fetch(`/v1/graph?${q}&shape=columns`);
    await r.json();
    return performance.now() - t;
  }, query);
}

export async function run(): Promise<void> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`);
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-bench-dashboard-'));
  const server = await startServer(dataDir, 'sqlite');
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--enable-unsafe-swiftshader'] });
  try {
    progress(`seeding ${EDGES} decisions`);
    const store = await openStore({ db: 'sqlite', dataDir });
    const all = decisions(Date.now());
    for (let i = 0; i < all.length; i += 5000) await store.addDecisions(all.slice(i, i + 5000));
    // The server's side of the answer, in this process: the store's query, the fold into
    // edges and the JSON text, the compact answer against one repeating both SPIFFE IDs per edge.
    const server1: { sql: number; fold: number; json: number; bytes: number; fullBytes: number; columnsBytes: number }[] = [];
    for (let r = 0; r < 3; r++) {
      let t = performance.now();
      const rows = await store.graphEdges({ since: Date.now() - 3_600_000, limit: 100_000 * 4 + 1 });
      const sql = performance.now() - t;
      t = performance.now();
      const graph = foldGraph(rows, 100_000);
      const fold = performance.now() - t;
      t = performance.now();
      const bytes = Buffer.byteLength(JSON.stringify(graph));
      const json = performance.now() - t;
      const full = graph.edges.map((e) => ({ ...e, from: graph.nodes[e.from], to: graph.nodes[e.to], rules: e.rules.map((i) => graph.rules[i]) }));
      const fullBytes = Buffer.byteLength(JSON.stringify({ nodes: graph.nodes.map((id) => ({ id })), edges: full, truncated: graph.truncated }));
      const columnsBytes = Buffer.byteLength(JSON.stringify(foldGraphColumns(rows, 100_000)));
      server1.push({ sql, fold, json, bytes, fullBytes, columnsBytes });
    }
    await store.close();

    const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    await page.goto(`${server.url}/ui`);
    await page.fill('#signin input[name=token]', readFileSync(join(dataDir, 'admin.token'), 'utf8').trim());
    await page.click('#signin button[type=submit]');
    await page.waitForSelector('header .who');

    const full = 'window=1h';
    const empty = 'window=1h&namespace=nothing-here';
    const runs = 3;
    const drawn: number[] = [];
    const phases: Phases[] = [];
    const cpu: { browser: number; server: number }[] = [];
    const drawnEmpty: number[] = [];
    const fetched: number[] = [];
    let edges = 0;
    for (let r = 0; r < runs; r++) {
      progress(`run ${r + 1} of ${runs}`);
      const e = await drawTime(page, server.url, empty);
      drawnEmpty.push(e.ms);
      // CPU of the browser (this process's other children) and of the server during the load.
      const before = { browser: cpuMs(process.pid, server.pid, false), server: cpuMs(server.pid) };
      const f = await drawTime(page, server.url, full);
      cpu.push({
        browser: cpuMs(process.pid, server.pid, false) - before.browser,
        server: cpuMs(server.pid) - before.server,
      });
      drawn.push(f.ms);
      phases.push(f.phases);
      edges = f.edges;
      fetched.push(await fetchTime(page, full));
    }
    progress('panning');
    const idle = await idleFps(page, 2000);
    const drag = await pan(page, 3000);
    const drag2 = await pan(page, 3000);
    await drawTime(page, server.url, empty);
    const idleEmpty = await idleFps(page, 2000);
    const dragEmpty = await pan(page, 3000);
    const med = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
    console.log(
      `\nDashboard: service graph of ${IDENTITIES.toLocaleString('en-US')} identities, ${edges.toLocaleString('en-US')} drawn edges, headless Chromium (median of ${runs})\n`,
    );
    row('measurement', 'value', 'baseline (same run)', 'ratio', 'target');
    row(
      'navigation -> graph drawn',
      `${Math.round(med(drawn))} ms`,
      `empty graph ${Math.round(med(drawnEmpty))} ms`,
      `${(med(drawn) / med(drawnEmpty)).toFixed(1)}x`,
      '<= 2000 ms',
    );
    row(
      '  CPU time of the load: browser + server',
      `${Math.round(med(cpu.map((c) => c.browser + c.server)))} ms`,
      `browser ${Math.round(med(cpu.map((c) => c.browser)))} ms, server ${Math.round(med(cpu.map((c) => c.server)))} ms`,
      '',
      '',
    );
    // Each phase's median over the runs (the medians need not add up to the total's).
    for (const [i, [name]] of (phases[0] ?? []).entries()) row(`  ${name}`, `${Math.round(med(phases.map((p) => p[i]?.[1] ?? Number.NaN)))} ms`, '', '', '');
    row('  (fetch + JSON of /v1/graph by itself, after)', `${Math.round(med(fetched))} ms`, '', '', '');
    const sm = (k: 'sql' | 'fold' | 'json' | 'bytes' | 'fullBytes' | 'columnsBytes'): number => med(server1.map((x) => x[k]));
    row('  server: store.graphEdges (in this process)', `${Math.round(sm('sql'))} ms`, '', '', '');
    row('  server: fold rows into edges (in this process)', `${Math.round(sm('fold'))} ms`, '', '', '');
    row('  server: JSON.stringify (in this process)', `${Math.round(sm('json'))} ms`, '', '', '');
    row(
      '  answer size',
      `${(sm('bytes') / 1e6).toFixed(1)} MB`,
      `full IDs per edge ${(sm('fullBytes') / 1e6).toFixed(1)} MB`,
      `${(sm('bytes') / sm('fullBytes')).toFixed(2)}x`,
      '',
    );
    row('  answer size, shape=columns (what the page reads)', `${(sm('columnsBytes') / 1e6).toFixed(1)} MB`, '', '', '');
    const fps = Math.min(drag.fps, drag2.fps);
    row(
      'pan (drag), frames per second (worse of 2)',
      `${fps.toFixed(1)}`,
      `empty graph ${dragEmpty.fps.toFixed(1)}`,
      `${(fps / dragEmpty.fps).toFixed(2)}x`,
      '>= 30',
    );
    row(
      '  longest frame during the drag',
      `${Math.round(Math.max(drag.worstFrameMs, drag2.worstFrameMs))} ms`,
      `empty graph ${Math.round(dragEmpty.worstFrameMs)} ms`,
      '',
      '',
    );
    row(
      '  release -> page free again (redrawn)',
      `${Math.round(Math.max(drag.settleMs, drag2.settleMs))} ms`,
      `empty graph ${Math.round(dragEmpty.settleMs)} ms`,
      '',
      '',
    );
    row('idle (nothing moving), frames per second', `${idle.toFixed(1)}`, `empty graph ${idleEmpty.toFixed(1)}`, `${(idle / idleEmpty).toFixed(2)}x`, '');
    console.log(
      `load average during the run: ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')}`,
    );
    await ctx.close();
  } finally {
    await browser.close();
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
