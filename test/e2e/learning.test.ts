/**
 * Learning mode end to end (issue 15, section 2), real processes: a server, an agent, `writ proxy`
 * in front of an app and for three callers, curl through them. A destination whose enforce policy
 * denies the shop callers learns; their calls pass and are counted; `policy propose` groups them as
 * ns/shop/sa/*; the proposal is shadowed (audit) and its rule hits counted; `policy promote`
 * enforces it and a caller never observed is refused with 403 {code, decisionId}.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PolicyEngine, parseAction, parsePolicies } from '@writ/policy';
import {
  applyPolicy,
  cleanup,
  onFreePorts,
  run,
  startAgentProcess,
  startProxyProcess,
  startServerProcess,
  waitFor,
  writ,
  type AgentProcess,
  type ServerProcess,
} from './helpers.ts';

const TD = 'spiffe://e2e.test/ns';
const ORDERS = `${TD}/orders/sa/api`;
const SHOP_A = `${TD}/shop/sa/a`;
const SHOP_B = `${TD}/shop/sa/b`;
const OPS = `${TD}/ops/sa/debug`;
const POLICY = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders }
spec:
  to: ${ORDERS}
  rules:
    - { name: web, effect: allow, from: ["${TD}/web/**"], actions: [{ methods: [GET] }] }
`;

let srv: ServerProcess;
let agent: AgentProcess;
let app: Server;
const proxies: ChildProcess[] = [];
const port: Record<string, number> = {};

async function startProxy(args: string[]): Promise<ChildProcess> {
  const child = await startProxyProcess(agent.socket, args);
  proxies.push(child);
  return child;
}

/** A GET through the caller's outbound proxy: [status, body]. */
async function call(caller: string, path: string): Promise<[string, Record<string, unknown>]> {
  const r = await run('curl', ['-sS', '-w', '\n%{http_code}', `http://127.0.0.1:${port[caller]}${path}`]);
  const lines = r.stdout.trim().split('\n');
  return [lines.pop()!, JSON.parse(lines.join('\n') || '{}') as Record<string, unknown>];
}

async function ok(args: string[]): Promise<string> {
  const r = await writ(srv, args);
  assert.equal(r.code, 0, `writ ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
const json = async <T>(args: string[]): Promise<T> => JSON.parse(await ok([...args, '-o', 'json'])) as T;

before(async () => {
  srv = await startServerProcess();
  for (const id of [ORDERS, SHOP_A, SHOP_B, OPS])
    await ok(['entry', 'create', '--spiffe-id', id, '--parent-id', 'spiffe://e2e.test/writ/agent/learn', '--selector', 'unix:uid:0']);
  const token = JSON.parse(await ok(['token', 'create', '--node-name', 'learn', '-o', 'json'])).token as string;
  agent = await startAgentProcess(srv, { joinToken: token });
  await applyPolicy(srv, agent.dataDir, POLICY);
  app = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ peer: req.headers['x-writ-peer-id'] ?? null, path: req.url }));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
  const appPort = (app.address() as AddressInfo).port;
  await onFreePorts(1, ([p]) => ((port['orders'] = p!), startProxy(['--spiffe-id', ORDERS, '--inbound', `127.0.0.1:${p}=127.0.0.1:${appPort}`])));
  for (const [name, id] of [
    ['a', SHOP_A],
    ['b', SHOP_B],
    ['ops', OPS],
  ] as const)
    await onFreePorts(1, ([p]) => ((port[name] = p!), startProxy(['--spiffe-id', id, '--outbound', `127.0.0.1:${p}=${ORDERS}@127.0.0.1:${port['orders']}`])));
});

after(async () => {
  for (const p of proxies) p.kill();
  app?.close();
  await agent?.stop();
  await srv?.stop();
  cleanup(srv.dataDir);
  cleanup(agent.dataDir);
});

describe('learning mode: observe, propose, shadow, enforce', () => {
  it('learns a destination through writ proxy, proposes a policy covering it, shadows it with hits, promotes it, and then denies an unobserved caller', async () => {
    // The enforce policy denies the shop callers.
    await waitFor('the enforce policy denying shop/a', async () => ((await call('a', '/v1/orders/1'))[0] === '403' ? true : undefined));

    // Bad input first: a window too long, a destination that is no pattern, nothing learned yet, no shadow to promote.
    const long = await writ(srv, ['learn', 'start', '--to', ORDERS, '--for', '400d']);
    assert.equal(long.code, 1);
    assert.match(long.stderr, /ERR_DURATION_INVALID/);
    const bad = await writ(srv, ['learn', 'start', '--to', 'spiffe://e2e.test/ns/*.*']);
    assert.match(bad.stderr, /ERR_FIELD_INVALID/);
    assert.match((await writ(srv, ['policy', 'propose', '--to', ORDERS])).stderr, /ERR_NOTHING_LEARNED/);
    assert.match((await writ(srv, ['policy', 'promote', '--to', ORDERS])).stderr, /ERR_NO_SHADOW_POLICY/);

    // Observe.
    await ok(['learn', 'start', '--to', ORDERS, '--for', '1h', '--wait']);
    const learned: Array<[string, string]> = [
      ['a', '/v1/orders/7'],
      ['a', '/v1/orders/8'],
      ['a', '/v1/orders/0b5e7c1a-1f2e-4a3b-9c4d-5e6f708192a3'],
      ['b', '/v1/orders/9'],
      ['b', '/v1/items'],
    ];
    for (const [who, path] of learned) {
      const [status, body] = await call(who, path);
      assert.equal(status, '200', `${who} ${path} is allowed while learning: ${JSON.stringify(body)}`);
    }
    const windows = await waitFor('every learned call counted', async () => {
      const w = await json<Array<{ to: string; active: boolean; observed: { requests: number; callers: number } }>>(['learn', 'list']);
      return w[0]?.observed.requests === learned.length ? w : undefined;
    });
    assert.deepEqual(
      windows.map((w) => [w.to, w.active, w.observed.callers]),
      [[ORDERS, true, 2]],
    );

    // Propose: the siblings grouped, ID-like segments generalised, covering every observed request.
    const p = await json<{
      yaml: string;
      name: string;
      coverage: { requests: number; allowed: number; deniedEdges: number };
      groups: Array<{ pattern: string }>;
    }>(['policy', 'propose', '--to', ORDERS]);
    assert.equal(p.name, 'orders', "named as the destination's own policy, which it replaces");
    assert.deepEqual(
      p.groups.map((g) => g.pattern),
      [`${TD}/shop/sa/*`],
    );
    assert.deepEqual([p.coverage.requests, p.coverage.allowed, p.coverage.deniedEdges], [5, 5, 0]);
    const proposed = parsePolicies(p.yaml).policies;
    const engine = new PolicyEngine(proposed);
    for (const [who, path] of learned)
      assert.equal(engine.decide({ from: who === 'a' ? SHOP_A : SHOP_B, to: ORDERS, action: parseAction(`GET ${path}`) }).decision, 'allow');
    assert.equal(engine.decide({ from: OPS, to: ORDERS, action: parseAction('GET /v1/orders/1') }).decision, 'deny');
    const plain = await ok(['policy', 'propose', '--to', ORDERS, '--diff']);
    assert.match(plain, /^-.*ns\/web\/\*\*/m, 'the diff removes the old rule');
    assert.match(plain, /^\+.*ns\/shop\/sa\/\*/m, 'and adds the grouped callers');

    // Shadow: audit mode; the proposal's rule allows, an unobserved caller passes as would-deny; hits counted.
    const shadow = await json<{ revision: number }>(['policy', 'propose', '--to', ORDERS, '--apply-shadow', '--wait']);
    assert.ok(shadow.revision > 0);
    assert.equal((await json<Array<{ to: string }>>(['learn', 'list'])).length, 0, 'the shadow ends the learning window');
    assert.equal((await call('a', '/v1/orders/10'))[0], '200');
    assert.equal((await call('ops', '/v1/orders/10'))[0], '200', 'audit: the unobserved caller still passes');
    const hits = await waitFor('the shadow hits counted', async () => {
      const h = await json<{ mode: string; rules: Array<{ name: string; allowed: number; wouldDeny: number }>; unmatched: { wouldDeny: number } }>([
        'policy',
        'hits',
        '--to',
        ORDERS,
      ]);
      return h.rules[0]?.allowed === 1 && h.unmatched.wouldDeny === 1 ? h : undefined;
    });
    assert.equal(hits.mode, 'audit');
    assert.equal(hits.rules[0]!.name, 'e2e.test/ns/shop/sa/*');

    // Promote: enforce; the observed callers pass, the unobserved one is refused with a decision id.
    await ok(['policy', 'promote', '--to', ORDERS, '--wait']);
    assert.equal((await call('b', '/v1/orders/11'))[0], '200');
    const [status, body] = await call('ops', '/v1/orders/11');
    assert.equal(status, '403');
    assert.equal(body['code'], 'NO_MATCHING_ALLOW');
    const id = String(body['decisionId']);
    assert.match(id, /^[0-9a-f-]{36}$/);
    const logged = await waitFor('the deny in the decision log', async () => {
      const r = await writ(srv, ['decisions', 'show', id, '-o', 'json']);
      return r.code === 0 ? (JSON.parse(r.stdout) as { from: string; decision: string }) : undefined;
    });
    assert.deepEqual([logged.from, logged.decision], [OPS, 'deny']);
    const again = await writ(srv, ['policy', 'promote', '--to', ORDERS]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /in enforce mode, not audit.*ERR_NO_SHADOW_POLICY/);
  });

  it('a LearningWindow applied by hand is listed, stopped by learn stop, and a window that is not there is ERR_LEARNING_NOT_FOUND', async () => {
    const f = join(agent.dataDir, 'window.yaml');
    const until = new Date(Date.now() + 3_600_000).toISOString();
    writeFileSync(f, `apiVersion: writ.dev/v1\nkind: LearningWindow\nmetadata: { name: reports }\nspec: { to: "${TD}/reports/**", until: ${until} }\n`);
    await ok(['policy', 'apply', '-f', f]);
    const list = await json<{ policies: Array<{ name: string; kind: string; to: string; active: boolean }> }>(['policy', 'list']);
    assert.deepEqual(
      list.policies.filter((p) => p.kind === 'LearningWindow').map((p) => [p.name, p.to, p.active]),
      [['LearningWindow/reports', `${TD}/reports/**`, true]],
    );
    assert.match(await ok(['policy', 'get', 'LearningWindow/reports']), /kind: LearningWindow/, 'stored as written');
    assert.deepEqual(
      (await json<Array<{ to: string }>>(['learn', 'list'])).map((w) => w.to),
      [`${TD}/reports/**`],
    );
    await ok(['learn', 'stop', '--to', `${TD}/reports/**`]);
    assert.deepEqual(await json<unknown[]>(['learn', 'list']), []);
    const gone = await writ(srv, ['learn', 'stop', '--to', `${TD}/reports/**`]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /ERR_LEARNING_NOT_FOUND/);
  });
});
