/**
 * Operations signals (issue 16 §4): docs/metrics.md lists exactly the metrics each running process
 * serves; `/livez` and `/readyz` of the server, the agent and the proxy mean what the page says
 * (not ready until the agent has its SVID, until the proxy has its identity); the shipped alert
 * rules and dashboard name only documented metrics.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { ROOT, WRIT, cleanup, freePort, startServerProcess, waitFor, writ, type ServerProcess } from './helpers.ts';

/** The metric names of each `## Server|Agent|Proxy` section's table. */
function documented(): Record<'server' | 'agent' | 'proxy', Set<string>> {
  const out = { server: new Set<string>(), agent: new Set<string>(), proxy: new Set<string>() };
  let section: keyof typeof out | undefined;
  for (const line of readFileSync(join(ROOT, 'docs/metrics.md'), 'utf8').split('\n')) {
    const h = /^## (Server|Agent|Proxy)$/.exec(line);
    if (h) section = h[1]!.toLowerCase() as keyof typeof out;
    else if (line.startsWith('## ')) section = undefined;
    const m = /^\| `(writ_[a-z0-9_]+)` \|/.exec(line);
    if (m && section) out[section].add(m[1]!);
  }
  return out;
}

const families = (text: string): Set<string> => new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
const sample = (text: string, name: string): number | undefined => {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
};

function get(url: string, ca?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const done = (res: import('node:http').IncomingMessage): void => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    };
    const req = ca ? httpsRequest(url, { ca }, done) : httpRequest(url, done);
    req.on('error', reject);
    req.end();
  });
}

/** A TCP relay that holds every connection, unanswered, until release(): a server that is there but slow to answer. */
class HoldingRelay {
  readonly #held: Socket[] = [];
  readonly #all = new Set<Socket>();
  #released = false;
  #server = createServer((c) => {
    this.#all.add(c);
    c.on('error', () => undefined);
    if (this.#released) this.#pipe(c);
    else c.pause(), this.#held.push(c);
  });
  port = 0;
  readonly target: number;
  constructor(target: number) {
    this.target = target;
  }
  async open(): Promise<void> {
    await new Promise<void>((r) => this.#server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.#server.address() as { port: number }).port;
  }
  #pipe(c: Socket): void {
    const up = connect(this.target, '127.0.0.1');
    this.#all.add(up);
    up.on('error', () => c.destroy());
    c.on('close', () => up.destroy());
    c.pipe(up).pipe(c);
    c.resume();
  }
  release(): void {
    this.#released = true;
    for (const c of this.#held.splice(0)) this.#pipe(c);
  }
  close(): void {
    for (const s of this.#all) s.destroy();
    this.#server.close();
  }
}

function spawnWrit(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const e = { ...process.env, ...env };
  delete e['NODE_TEST_CONTEXT'];
  const child = spawn(process.execPath, [WRIT, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: e });
  if (process.env['DEBUG_OPS']) {
    child.stdout!.pipe(process.stderr);
    child.stderr!.pipe(process.stderr);
  } else {
    child.stdout!.resume();
    child.stderr!.resume();
  }
  return child;
}

describe('metrics reference, health endpoints, alert rules and dashboard', () => {
  const doc = documented();
  const children: ChildProcess[] = [];
  const dirs: string[] = [];
  let srv: ServerProcess | undefined;
  let relay: HoldingRelay | undefined;
  after(async () => {
    for (const c of children) c.kill('SIGTERM');
    relay?.close();
    await srv?.stop();
    for (const d of dirs) cleanup(d);
  });

  it('the server serves exactly the documented metrics; /livez and /readyz are 200 once it listens', async () => {
    srv = await startServerProcess();
    dirs.push(srv.dataDir);
    const ca = readFileSync(join(srv.dataDir, 'bundle.pem'), 'utf8');
    assert.equal((await get(`${srv.url}/livez`, ca)).status, 200);
    assert.equal((await get(`${srv.url}/readyz`, ca)).status, 200);
    const m = await get(`${srv.url}/metrics`, ca);
    assert.equal(m.status, 200);
    assert.deepEqual([...families(m.text)].sort(), [...doc.server].sort(), 'docs/metrics.md ## Server lists exactly what /metrics serves');
  });

  it('the agent is not ready until it has its SVID, the proxy not until it has its identity; both serve exactly the documented metrics', {
    timeout: 120_000,
  }, async () => {
    assert.ok(srv);
    const work = mkdtempSync(join(tmpdir(), 'writ-ops-'));
    dirs.push(work);
    const uid = process.getuid!();
    assert.equal(
      (
        await writ(srv, [
          'entry',
          'create',
          '--spiffe-id',
          'spiffe://e2e.test/ops/web',
          '--parent-id',
          'spiffe://e2e.test/writ/agent/ops',
          '--selector',
          `unix:uid:${uid}`,
        ])
      ).code,
      0,
    );
    const token = JSON.parse((await writ(srv, ['token', 'create', '--node-name', 'ops', '-o', 'json'])).stdout).token as string;
    // The agent reaches the server through a relay that holds its connections: attestation waits.
    relay = new HoldingRelay(srv.port);
    await relay.open();
    const agentHealth = await freePort();
    const socket = join(work, 'api.sock');
    children.push(
      spawnWrit(['agent', 'start', '--data-dir', join(work, 'agent'), '--socket', socket, '--join-token', token, '--health-addr', `127.0.0.1:${agentHealth}`], {
        WRIT_SERVER: `https://127.0.0.1:${relay.port}`,
        WRIT_CA_FILE: join(srv.dataDir, 'bundle.pem'),
      }),
    );
    const agentUrl = `http://127.0.0.1:${agentHealth}`;
    const notReady = await waitFor('the agent health endpoint', async () => {
      const r = await get(`${agentUrl}/readyz`);
      return r.status === 503 ? r : undefined;
    });
    assert.match(JSON.parse(notReady.text).reason, /attesting/);
    assert.equal((await get(`${agentUrl}/livez`)).status, 200, 'alive while not ready');
    const early = (await get(`${agentUrl}/metrics`)).text;
    assert.equal(sample(early, 'writ_agent_ready'), 0);
    assert.deepEqual([...families(early)].sort(), [...doc.agent].sort(), 'docs/metrics.md ## Agent lists exactly what the agent serves');

    // A proxy on the agent's socket: it waits for its identity, not ready meanwhile.
    const proxyHealth = await freePort();
    const inbound = await freePort();
    children.push(spawnWrit(['proxy', '--socket', socket, '--inbound', `127.0.0.1:${inbound}=127.0.0.1:1`, '--health-addr', `127.0.0.1:${proxyHealth}`]));
    const proxyUrl = `http://127.0.0.1:${proxyHealth}`;
    const waiting = await waitFor('the proxy health endpoint', async () => {
      const r = await get(`${proxyUrl}/readyz`);
      return r.status === 503 ? r : undefined;
    });
    assert.match(JSON.parse(waiting.text).reason, /identity/);
    const proxyMetrics = (await get(`${proxyUrl}/metrics`)).text;
    assert.equal(sample(proxyMetrics, 'writ_proxy_ready'), 0);
    assert.deepEqual([...families(proxyMetrics)].sort(), [...doc.proxy].sort(), 'docs/metrics.md ## Proxy lists exactly what the proxy serves');

    relay.release();
    await waitFor('the agent ready', async () => ((await get(`${agentUrl}/readyz`)).status === 200 ? true : undefined), 60_000);
    const ready = (await get(`${agentUrl}/metrics`)).text;
    assert.equal(sample(ready, 'writ_agent_ready'), 1);
    assert.ok((sample(ready, 'writ_agent_svid_expiry_timestamp_seconds') ?? 0) > Date.now() / 1000, 'its SVID expires in the future');
    await waitFor('the agent synced', async () => (sample((await get(`${agentUrl}/metrics`)).text, 'writ_agent_server_connected') === 1 ? true : undefined));
    assert.equal(sample((await get(`${agentUrl}/metrics`)).text, 'writ_agent_entries'), 1);
    await waitFor('the proxy ready', async () => ((await get(`${proxyUrl}/readyz`)).status === 200 ? true : undefined), 60_000);
    assert.equal(sample((await get(`${proxyUrl}/metrics`)).text, 'writ_proxy_ready'), 1);
    assert.equal((await get(`${proxyUrl}/nothing`)).status, 404);
  });

  /** Metric names in a PromQL expression; a histogram's series are named by their family. */
  const metricsIn = (expr: string): string[] => [...expr.matchAll(/\bwrit_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''));
  const all = new Set([...doc.server, ...doc.agent, ...doc.proxy]);

  it('every alert rule is well formed and names only documented metrics', () => {
    const rules = parseYaml(readFileSync(join(ROOT, 'deploy/prometheus/alerts.yml'), 'utf8')) as {
      groups: Array<{
        name: string;
        rules: Array<{ alert: string; expr: string; for?: string; labels: { severity: string }; annotations: { summary: string } }>;
      }>;
    };
    const names = new Set<string>();
    let count = 0;
    for (const g of rules.groups) {
      assert.match(g.name, /^writ-/);
      for (const r of g.rules) {
        count++;
        assert.match(r.alert, /^Writ[A-Za-z]+$/);
        assert.ok(!names.has(r.alert), `${r.alert} appears once`);
        names.add(r.alert);
        assert.ok(['critical', 'warning'].includes(r.labels.severity), `${r.alert}: severity`);
        assert.ok(r.annotations.summary.length > 10, `${r.alert}: a summary`);
        if (r.for !== undefined) assert.match(r.for, /^\d+[smh]$/, `${r.alert}: for`);
        assert.equal(r.expr.split('(').length, r.expr.split(')').length, `${r.alert}: balanced parentheses`);
        for (const m of metricsIn(r.expr)) assert.ok(all.has(m), `${r.alert} names ${m}, which docs/metrics.md does not list`);
      }
    }
    assert.ok(count >= 10);
    // Each process's readiness has its alert.
    for (const m of ['writ_agent_ready', 'writ_proxy_ready', 'writ_http_requests_total'])
      assert.ok(
        [...rules.groups.flatMap((g) => g.rules)].some((r) => r.expr.includes(m)),
        m,
      );
  });

  it('every Grafana panel queries only documented metrics', () => {
    const d = JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/writ.json'), 'utf8')) as {
      uid: string;
      panels: Array<{ id: number; title: string; type: string; targets: Array<{ expr: string; refId: string }> }>;
    };
    assert.equal(d.uid, 'writ-overview');
    const ids = new Set(d.panels.map((p) => p.id));
    assert.equal(ids.size, d.panels.length, 'panel ids are unique');
    for (const p of d.panels) {
      assert.ok(p.targets.length > 0, `${p.title}: a query`);
      for (const t of p.targets) {
        const used = metricsIn(t.expr);
        assert.ok(used.length > 0, `${p.title}: names a metric`);
        for (const m of used) assert.ok(all.has(m), `${p.title} queries ${m}, which docs/metrics.md does not list`);
      }
    }
  });
});
