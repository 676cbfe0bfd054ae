/**
 * Writ next to SPIRE (spire-server and spire-agent 1.13.3, built by .ci/run into test/go/bin) on
 * the same box in the same run, each with its defaults on SQLite, one agent each, and one workload
 * on each agent watching its identities through go-spiffe's `WatchX509Context` (test/go/gospiffe
 * `watch`): the same client against both.
 *
 * - **register → SVID**: N entries for the workload, registered one after the other (not waiting
 *   for each) through each server's admin interface (Writ: `POST /v1/entries`; SPIRE:
 *   `spire-server entry create`); for each, the time from its registration's answer until the
 *   workload's stream holds its SVID.
 * - **delete → lost**: the same N deleted one after the other; the time from each deletion's answer
 *   until the stream no longer holds it.
 * - **issuance**: N new entries registered in one call (`POST /v1/entries/batch`; `entry create
 *   -data`), until the workload holds all N: X.509-SVIDs signed and delivered through the agent per second.
 * - **agent RSS** holding those N identities for the workload.
 *
 * Before any of it, the workload is given one more identity, the anchor, that it holds throughout. A
 * workload entitled to nothing is answered PermissionDenied (the Workload API says so, both agents do
 * it), and go-spiffe then calls again only after 1 s, 2 s, 3 s...: without the anchor, the batch and
 * the first registrations were timed through that wait. `BENCH_SPIRE_ANCHOR=0` measures without it.
 *
 * `BENCH_ENTRIES` sets N (default 100). `BENCH_SPIRE_ONLY=rss` skips the register and delete timings
 * (issuance and RSS only, a minute less). `BENCH_SPIRE_SYSTEMS=writ` runs Writ's side only (`spire`
 * SPIRE's only), for A/B runs of Writ's agent against itself. `BENCH_WRIT_CLI` names the script that starts Writ's agent
 * (default packages/cli/bin/writ.js; a copy of an older dist/writ.js compares two builds), and
 * `BENCH_WRIT_NODE_FLAGS` the V8 flags it runs with (default those of deploy/ and of the agent's
 * re-exec in bin/writ.js: `--max-semi-space-size=1 --no-maglev`; empty for Node's
 * defaults). Needs root (SPIRE's and Writ's unix attestors match this uid).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { percentile, row } from './util.ts';
import { startServer } from './vuln/server.ts';

const ROOT = new URL('../', import.meta.url).pathname;
const BIN = join(ROOT, 'test/go/bin');
const FIXTURES = join(ROOT, 'test/e2e/fixtures/spire');
const N = Number(process.env['BENCH_ENTRIES'] ?? 100);
const UID = process.getuid!();
const RSS_ONLY = process.env['BENCH_SPIRE_ONLY'] === 'rss';
const ANCHOR = process.env['BENCH_SPIRE_ANCHOR'] !== '0';
const SYSTEMS = (process.env['BENCH_SPIRE_SYSTEMS'] ?? 'writ,spire').split(',');
const WRIT_CLI = process.env['BENCH_WRIT_CLI'] ?? join(ROOT, 'packages/cli/bin/writ.js');
/** As deploy/systemd/writ-agent.service and deploy/kubernetes/base/agent.yaml start the agent. */
const WRIT_NODE_FLAGS = (process.env['BENCH_WRIT_NODE_FLAGS'] ?? '--max-semi-space-size=1 --no-maglev').split(/\s+/).filter(Boolean);

interface Update {
  at: number;
  ids: Set<string>;
}

/** gospiffe `watch` on `socket`: every update of the workload's X.509 context, with when it arrived. */
function watcher(socket: string): { updates: Update[]; child: ChildProcess; until(what: string, ok: (u: Update) => boolean, after: number): Promise<number> } {
  const child = spawn(join(BIN, 'gospiffe'), ['watch', '-socket', socket], { stdio: ['ignore', 'pipe', 'inherit'] });
  const updates: Update[] = [];
  const waiting = new Set<() => void>();
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    const at = performance.now();
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = JSON.parse(buf.slice(0, i)) as { event: string; ids?: string[] };
      buf = buf.slice(i + 1);
      if (line.event === 'update') updates.push({ at, ids: new Set(line.ids ?? []) });
      // The last identity gone: the stream says "no identity issued" (PermissionDenied) instead of an empty update.
      else if (line.event === 'watch-error') updates.push({ at, ids: new Set() });
    }
    for (const w of [...waiting]) w();
  });
  /** When the first update after `after` (ms, performance.now) satisfying `ok` arrived. */
  const until = (what: string, ok: (u: Update) => boolean, after: number): Promise<number> =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => (waiting.delete(check), reject(new Error(`timed out waiting for ${what}`))), 120_000);
      const check = (): void => {
        const u = updates.find((x) => x.at >= after && ok(x));
        if (u) {
          clearTimeout(t);
          waiting.delete(check);
          resolve(u.at);
        }
      };
      waiting.add(check);
      check();
    });
  return { updates, child, until };
}

function rssMb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

function sh(cmd: string, args: string[], input?: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    // A command that exits before reading its input (a failed call) must not crash the bench with EPIPE.
    c.stdin.on('error', () => undefined);
    c.stdin.end(input ?? '');
    c.once('exit', (code) => resolve({ code, out }));
  });
}

const stop = (c: ChildProcess): Promise<void> =>
  new Promise((r) => {
    if (c.exitCode !== null || c.signalCode !== null) return r();
    c.once('exit', () => r());
    c.kill('SIGTERM');
  });

async function waitUntil(what: string, fn: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + 60_000;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface System {
  name: string;
  /** Registers one entry for the workload; resolves with its handle once the server answered. */
  register(id: string): Promise<string>;
  registerMany(ids: string[]): Promise<void>;
  remove(handle: string): Promise<void>;
  agentPid: number;
  socket: string;
}

interface Result {
  register: number[];
  remove: number[];
  issuance: number;
  /** ms from the batch's registration until the workload held all of it. */
  batchMs: number;
  rss: number;
}

async function measure(sys: System, td: string): Promise<Result> {
  const w = watcher(sys.socket);
  try {
    if (ANCHOR) {
      const anchor = `spiffe://${td}/bench/anchor`;
      await sys.register(anchor);
      await w.until('the anchor held', (u) => u.ids.has(anchor), 0);
    }
    const ids = Array.from({ length: N }, (_, i) => `spiffe://${td}/bench/w${i}`);
    const register: number[] = [];
    const handles: string[] = [];
    // One after the other, each timed from its own registration's answer (SPIRE's agent syncs every
    // 5 s: waiting for each before the next would take N times that).
    const registered: number[] = [];
    for (const id of RSS_ONLY ? [] : ids) {
      handles.push(await sys.register(id));
      registered.push(performance.now());
    }
    for (const [i, id] of (RSS_ONLY ? [] : ids).entries()) register.push((await w.until(`${id} held`, (u) => u.ids.has(id), registered[i]!)) - registered[i]!);
    const removed: number[] = [];
    for (const h of RSS_ONLY ? [] : handles) {
      await sys.remove(h);
      removed.push(performance.now());
    }
    const remove: number[] = [];
    for (const [i, id] of (RSS_ONLY ? [] : ids).entries()) remove.push((await w.until(`${id} lost`, (u) => !u.ids.has(id), removed[i]!)) - removed[i]!);
    const more = Array.from({ length: N }, (_, i) => `spiffe://${td}/bench/b${i}`);
    const t0 = performance.now();
    await sys.registerMany(more);
    const all = await w.until(`all ${N} of the batch held`, (u) => more.every((id) => u.ids.has(id)), t0);
    return {
      register: register.sort((a, b) => a - b),
      remove: remove.sort((a, b) => a - b),
      issuance: (N * 1000) / (all - t0),
      batchMs: all - t0,
      rss: rssMb(sys.agentPid),
    };
  } finally {
    await stop(w.child);
  }
}

async function writSystem(dir: string): Promise<{ sys: System; close(): Promise<void> }> {
  const srv = await startServer(join(dir, 'writ'), 'sqlite');
  const call = async (method: 'GET' | 'POST', path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const r = await srv.call(method, path, body === undefined ? undefined : Buffer.from(JSON.stringify(body)));
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${r.body.toString()}`);
    return r.body.length ? (JSON.parse(r.body.toString()) as Record<string, unknown>) : {};
  };
  const del = async (path: string): Promise<void> => {
    const r = await srv.call('DELETE' as 'GET', path);
    if (r.status >= 300) throw new Error(`DELETE ${path}: ${r.status} ${r.body.toString()}`);
  };
  const parentId = 'spiffe://bench.example/writ/agent/bench';
  const joinToken = (await call('POST', '/v1/join-tokens', { nodeName: 'bench' }))['token'] as string;
  const socket = join(dir, 'writ-agent.sock');
  const agent = spawn(
    process.execPath,
    [...WRIT_NODE_FLAGS, WRIT_CLI, 'agent', 'start', '--data-dir', join(dir, 'writ-agent'), '--socket', socket, '--join-token', joinToken],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
      // The same flags for bin/writ.js's re-exec: exactly these, none added.
      env: { ...process.env, WRIT_AGENT_NODE_FLAGS: WRIT_NODE_FLAGS.join(' '), WRIT_SERVER: srv.url, WRIT_CA_FILE: join(dir, 'writ', 'bundle.pem') },
    },
  );
  await waitUntil('the Writ agent socket', async () => existsSync(socket));
  const entry = (spiffeId: string) => ({ spiffeId, parentId, selectors: [`unix:uid:${UID}`] });
  return {
    sys: {
      name: 'Writ',
      register: async (id) => (await call('POST', '/v1/entries', entry(id)))['id'] as string,
      registerMany: async (ids) => void (await call('POST', '/v1/entries/batch', { entries: ids.map(entry) })),
      remove: (h) => del(`/v1/entries/${h}`),
      agentPid: agent.pid!,
      socket,
    },
    close: async () => {
      await stop(agent);
      await srv.stop();
    },
  };
}

async function spireSystem(dir: string): Promise<{ sys: System; close(): Promise<void> }> {
  const d = join(dir, 'spire');
  mkdirSync(join(d, 'data'), { recursive: true });
  chmodSync(d, 0o755);
  const fill = (name: string, values: Record<string, string | number>): string => {
    let text = readFileSync(join(FIXTURES, `${name}.conf.tmpl`), 'utf8');
    for (const [k, v] of Object.entries(values)) text = text.replaceAll(`@@${k}@@`, String(v));
    const file = join(d, `${name}.conf`);
    writeFileSync(file, text);
    return file;
  };
  const serverSock = join(d, 'server.sock');
  const port = await freePort();
  const server = spawn(join(BIN, 'spire-server'), ['run', '-config', fill('server', { DIR: d, PORT: port, BUNDLE_PORT: await freePort() })], {
    stdio: 'ignore',
  });
  const cli = async (args: string[], input?: string): Promise<string> => {
    const r = await sh(join(BIN, 'spire-server'), [...args, '-socketPath', serverSock], input);
    if (r.code !== 0) throw new Error(`spire-server ${args.join(' ')}: ${r.out}`);
    return r.out;
  };
  await waitUntil('spire-server healthy', async () => (await sh(join(BIN, 'spire-server'), ['healthcheck', '-socketPath', serverSock])).code === 0);
  const node = 'spiffe://spire.test/node/bench';
  const token = /Token: (\S+)/.exec(await cli(['token', 'generate', '-spiffeID', node, '-ttl', '600']))![1]!;
  writeFileSync(join(d, 'bootstrap.pem'), await cli(['bundle', 'show']));
  const socket = join(d, 'agent.sock');
  const agent = spawn(join(BIN, 'spire-agent'), ['run', '-config', fill('agent', { DIR: d, PORT: port, SOCKET: socket }), '-joinToken', token], {
    stdio: 'ignore',
  });
  await waitUntil('spire-agent healthy', async () => (await sh(join(BIN, 'spire-agent'), ['healthcheck', '-socketPath', socket])).code === 0);
  const selector = `unix:uid:${UID}`;
  return {
    sys: {
      name: 'SPIRE',
      register: async (id) => /Entry ID\s*:\s*(\S+)/.exec(await cli(['entry', 'create', '-parentID', node, '-spiffeID', id, '-selector', selector]))![1]!,
      registerMany: async (ids) => {
        const entries = ids.map((spiffe_id) => ({ spiffe_id, parent_id: node, selectors: [{ type: 'unix', value: `uid:${UID}` }] }));
        await cli(['entry', 'create', '-data', '-'], JSON.stringify({ entries }));
      },
      remove: async (h) => void (await cli(['entry', 'delete', '-entryID', h])),
      agentPid: agent.pid!,
      socket,
    },
    close: async () => {
      await stop(agent);
      await stop(server);
    },
  };
}

const ms = (v: number): string => (v < 10 ? v.toFixed(2) : v.toFixed(0));

export async function run(): Promise<void> {
  for (const b of [...(SYSTEMS.includes('spire') ? ['spire-server', 'spire-agent'] : []), 'gospiffe'])
    if (!existsSync(join(BIN, b))) throw new Error(`${join(BIN, b)} missing: build it as .ci/run does`);
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-spire-'));
  chmodSync(dir, 0o755);
  const results: Array<[string, Result]> = [];
  try {
    for (const make of [...(SYSTEMS.includes('writ') ? [writSystem] : []), ...(SYSTEMS.includes('spire') ? [spireSystem] : [])]) {
      const { sys, close } = await make(dir);
      try {
        results.push([sys.name, await measure(sys, sys.name === 'Writ' ? 'bench.example' : 'spire.test')]);
      } finally {
        await close();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(
    `load average at the end: ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')} (${new Date().toISOString()})`,
  );
  if (results.length === 1) {
    const [[name, r]] = results as [[string, Result]];
    const p = (xs: number[]): string => `${ms(percentile(xs, 50))} / ${ms(percentile(xs, 99))} ms`;
    console.log(
      `\n${name} only (${N} entries${ANCHOR ? ' and the anchor' : ''}${name === 'Writ' ? `; node ${WRIT_NODE_FLAGS.join(' ') || "(Node's defaults)"}, ${WRIT_CLI}` : ''})\n`,
    );
    if (!RSS_ONLY) row('register -> SVID held, p50 / p99', p(r.register), '', '', '');
    if (!RSS_ONLY) row('delete -> SVID gone, p50 / p99', p(r.remove), '', '', '');
    row(`issuance, ${N} at once: all held, SVIDs/s`, `${ms(r.batchMs)} ms, ${r.issuance.toFixed(0)}/s`, '', '', '');
    row(`agent RSS holding ${N} identities`, `${r.rss.toFixed(1)} MB`, '', '', '');
    return;
  }
  const [[, w], [, s]] = results as [[string, Result], [string, Result]];
  console.log(
    `\nWrit next to SPIRE 1.13.3 (${RSS_ONLY ? 'issuance and RSS only, ' : ''}one agent each, one go-spiffe workload watching, ${N} entries${ANCHOR ? ' and the anchor' : ', no anchor'}; Writ's agent: node ${WRIT_NODE_FLAGS.join(' ') || "(Node's defaults)"})\n`,
  );
  row('measurement', 'Writ', 'SPIRE', 'ratio', 'target');
  const p = (xs: number[]): string => `${ms(percentile(xs, 50))} / ${ms(percentile(xs, 99))} ms`;
  if (!RSS_ONLY)
    row(
      'register -> SVID held, p50 / p99',
      p(w.register),
      p(s.register),
      `${(percentile(s.register, 50) / percentile(w.register, 50)).toFixed(0)}x`,
      '>= 10x faster',
    );
  if (!RSS_ONLY)
    row('delete -> SVID gone, p50 / p99', p(w.remove), p(s.remove), `${(percentile(s.remove, 50) / percentile(w.remove, 50)).toFixed(0)}x`, 'Writ ahead');
  const batch = (r: Result): string => `${ms(r.batchMs)} ms, ${r.issuance.toFixed(0)}/s`;
  row(`issuance, ${N} at once: all held, SVIDs/s`, batch(w), batch(s), `${(w.issuance / s.issuance).toFixed(1)}x`, 'Writ ahead');
  row(`agent RSS holding ${N} identities`, `${w.rss.toFixed(0)} MB`, `${s.rss.toFixed(0)} MB`, `${(s.rss / w.rss).toFixed(2)}x`, 'Writ ahead');
}
