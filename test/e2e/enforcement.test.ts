/**
 * Policy distribution, quarantine and local checks with real processes: the agent's
 * writ.authz.v1.Authorizer driven by Python grpcio.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import { WorkloadClient } from '@writ/sdk';
import {
  DEBIAN_PYTHON,
  ROOT,
  applyPolicy,
  cleanup,
  ordersPolicy,
  run,
  startAgentProcess,
  startServerProcess,
  waitFor,
  writ,
  type AgentProcess,
  type RunResult,
  type ServerProcess,
  pythonStubs,
} from './helpers.ts';
import { CALLER, CASES, assertCheckAnswer, tablePolicy } from './enforcement-cases.ts';

let srv: ServerProcess;
let agent: AgentProcess;
let stubs: string;
const ME = 'spiffe://e2e.test/ns/orders/sa/api';
const WEB = 'spiffe://e2e.test/ns/web/sa/frontend';
const apply = (yaml: string): Promise<void> => applyPolicy(srv, stubs, yaml);
/** `writ` against the server; it must exit 0. */
async function ok(args: string[]): Promise<RunResult> {
  const r = await writ(srv, args);
  assert.equal(r.code, 0, `writ ${args.join(' ')}: ${r.stderr}`);
  return r;
}

async function check(from: string, action: string, to = ME): Promise<Record<string, unknown>> {
  const r = await run(DEBIAN_PYTHON, [join(ROOT, 'test/e2e/fixtures/authz_client.py'), stubs, agent.socket, from, to, action]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

before(async () => {
  srv = await startServerProcess({ restartable: true });
  assert.equal((await ok(['entry', 'create', '--spiffe-id', ME, '--parent-id', 'spiffe://e2e.test/writ/agent/enf', '--selector', 'unix:uid:0'])).code, 0);
  const token = JSON.parse((await ok(['token', 'create', '--node-name', 'enf', '-o', 'json'])).stdout).token as string;
  agent = await startAgentProcess(srv, { joinToken: token });
  stubs = await pythonStubs('writ_authz.proto');
});
after(async () => {
  await agent.stop();
  await srv.stop();
  for (const d of [srv.dataDir, agent.dataDir, stubs]) cleanup(d);
});

describe('local authorization on the agent', () => {
  it('denies everything with NO_POLICY_LOADED before any policy, then decides locally per the applied policy', async () => {
    await waitFor('an identity', async () => ((await check(WEB, 'GET /v1/orders/1'))['reason'] ? true : undefined));
    assert.equal((await check(WEB, 'GET /v1/orders/1'))['reason'], 'NO_POLICY_LOADED');
    await apply(ordersPolicy(ME, 'GET'));
    await waitFor('the policy at the agent', async () => ((await check(WEB, 'GET /v1/orders/1'))['allowed'] === true ? true : undefined));
    const a = await check(WEB, 'GET /v1/orders/1');
    assert.equal(a['decision'], 'allow');
    assert.equal(a['rule'], 'orders#0');
    assert.match(String(a['id']), /^[0-9a-f-]{36}$/);
    assert.deepEqual(await check('spiffe://e2e.test/ns/legacy/app', 'GET /v1/orders/1').then((x) => [x['decision'], x['reason']]), ['deny', 'DENY_RULE']);
    assert.equal((await check('', 'GET /v1/orders/1'))['reason'], 'UNAUTHENTICATED');
    assert.equal(
      (await check(WEB, 'GET /v1/orders/1', 'spiffe://e2e.test/ns/someone/else'))['status'],
      'PERMISSION_DENIED',
      'a workload may only ask about calls to itself',
    );
    assert.equal((await check(WEB, 'launch the missiles'))['status'], 'INVALID_ARGUMENT');
  });

  it('a policy change is enforced by the agent (time printed), and every agent reports the revision it enforces', async (t) => {
    const t0 = performance.now();
    await apply(ordersPolicy(ME, 'GET, DELETE'));
    await waitFor('the new revision at the agent', async () => ((await check(WEB, 'DELETE /v1/orders/1'))['allowed'] === true ? true : undefined));
    // Measured, not asserted: a loaded machine cannot promise a wall-clock bound (the wait above is the bound).
    t.diagnostic(`applied and enforced in ${(performance.now() - t0).toFixed(0)} ms`);
    await waitFor(
      'the agent to acknowledge',
      async () => {
        const s = JSON.parse((await ok(['policy', 'status', '-o', 'json'])).stdout);
        const me = s.agents.find((a: { spiffeId: string }) => a.spiffeId === 'spiffe://e2e.test/writ/agent/enf');
        return me && me.revision === s.revision && me.behind === 0 ? true : undefined;
      },
      30_000,
    );
  });

  it('quarantine denies a caller once the agent has it (time printed), withdraws the SVIDs of a quarantined workload, and lifts cleanly', async (t) => {
    const t0 = performance.now();
    await ok(['quarantine', 'add', WEB, '--reason', 'stolen token']);
    await waitFor('quarantine at the agent', async () => ((await check(WEB, 'GET /v1/orders/1'))['reason'] === 'QUARANTINED' ? true : undefined));
    t.diagnostic(`quarantine enforced in ${(performance.now() - t0).toFixed(0)} ms`);
    assert.match((await ok(['quarantine', 'list'])).stdout, /spiffe:\/\/e2e\.test\/ns\/web\/sa\/frontend\s+\S+\s+never\s+stolen token/);
    // Quarantining this workload's own identity ends its SVID stream.
    const c = new WorkloadClient(`unix://${agent.socket}`, { attempts: 1 });
    const errors: string[] = [];
    const seen: number[] = [];
    const stop = c.watchX509Context(
      (ctx) => seen.push(ctx.svids.length),
      (e) => errors.push(e.message),
    );
    await waitFor('the first context', async () => (seen.length ? true : undefined));
    await ok(['quarantine', 'add', ME, '--reason', 'incident 42', '--ttl', '1h']);
    await waitFor('the stream to end with PermissionDenied', async () => (errors.some((e) => /PERMISSION_DENIED/.test(e)) ? true : undefined));
    await ok(['quarantine', 'remove', ME]);
    await ok(['quarantine', 'remove', WEB]);
    await waitFor('the identity back', async () => ((await c.fetchX509Context()).svids.length === 1 ? true : undefined));
    assert.equal((await check(WEB, 'GET /v1/orders/1'))['decision'], 'allow');
    stop();
    c.close();
  });

  it('every local decision reaches the decision log and the metrics', async () => {
    const marker = `spiffe://e2e.test/ns/web/sa/logged-${Date.now()}`;
    await check(marker, 'GET /v1/orders/99');
    const rows = await waitFor('the decision in the log', async () => {
      const r = JSON.parse((await ok(['decisions', 'query', '--from', marker, '-o', 'json'])).stdout) as Array<Record<string, unknown>>;
      return r.length ? r : undefined;
    });
    assert.equal(rows[0]!['decision'], 'allow');
    assert.equal(rows[0]!['reason'], 'ALLOW_RULE');
    assert.equal(rows[0]!['to'], ME);
    assert.equal(rows[0]!['rule'], 'orders#0');
    assert.equal(rows[0]!['reporter'], 'spiffe://e2e.test/writ/agent/enf');
    const denies = JSON.parse((await ok(['decisions', 'query', '--decision', 'deny', '-o', 'json'])).stdout) as Array<Record<string, unknown>>;
    assert.ok(denies.some((d) => d['reason'] === 'DENY_RULE') && denies.some((d) => d['reason'] === 'QUARANTINED'));
    const metrics = (await run('curl', ['-sS', '--cacert', join(srv.dataDir, 'bundle.pem'), `${srv.url}/metrics`])).stdout;
    assert.match(metrics, /writ_authz_decisions_total\{decision="allow",reason="ALLOW_RULE"\} \d+/);
    assert.match(metrics, /writ_authz_decisions_total\{decision="deny",reason="QUARANTINED"\} \d+/);
    assert.match(metrics, /writ_authz_decision_duration_seconds_count \d+/);
    const table = await ok(['decisions', 'query', '--from', marker]);
    assert.match(table.stdout, /ALLOW_RULE/);
  });

  it('a dry run lists the calls seen recently whose outcome would change', async () => {
    // web's DELETE was allowed above (revision with GET, DELETE); a policy with GET only would deny it.
    await check(WEB, 'DELETE /v1/orders/1');
    await waitFor('the DELETE in the log', async () => {
      const r = JSON.parse((await ok(['decisions', 'query', '--from', WEB, '-o', 'json'])).stdout) as Array<Record<string, unknown>>;
      return r.some((d) => d['action'] === 'DELETE /v1/orders/1') ? true : undefined;
    });
    const f = join(stubs, 'dry.yaml');
    writeFileSync(f, ordersPolicy(ME, 'GET'));
    const r = await writ(srv, ['policy', 'apply', '-f', f, '--dry-run']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      new RegExp(`allow -> deny {2}${WEB.replace(/[/.]/g, '\\$&')} -> ${ME.replace(/[/.]/g, '\\$&')} {2}DELETE /v1/orders/1 {2}\\(seen \\d+x\\)`),
    );
    const json = JSON.parse((await ok(['policy', 'apply', '-f', f, '--dry-run', '-o', 'json'])).stdout);
    assert.ok(json.changedEdges.some((e: { action: string; after: string }) => e.action === 'DELETE /v1/orders/1' && e.after === 'deny'));
    assert.ok(!json.changedEdges.some((e: { action: string }) => e.action === 'GET /v1/orders/1'), 'unchanged calls are not listed');
  });

  it('with the server away the agent keeps enforcing the last good policy, also after its own restart', async () => {
    await srv.stop();
    try {
      assert.equal((await check(WEB, 'DELETE /v1/orders/1'))['decision'], 'allow');
      assert.equal((await check('spiffe://e2e.test/ns/legacy/app', 'GET /v1/orders/1'))['decision'], 'deny');
      await agent.stop();
      agent = await startAgentProcess(srv, { dataDir: agent.dataDir, socket: agent.socket });
      assert.equal((await check(WEB, 'DELETE /v1/orders/1'))['decision'], 'allow', 'the policy came back from the data dir');
    } finally {
      srv = await srv.startAgain();
    }
  });
});

describe('the shared enforcement table at the agent', () => {
  it("the agent's Check gives every case of the table its answer (as the proxy and the middleware do)", async () => {
    // The table's policy alone governs ME: the orders policy of the tests above goes.
    const del = await writ(srv, ['policy', 'delete', 'orders']);
    assert.ok(del.code === 0 || /ERR_NOT_FOUND/.test(del.stderr), del.stderr);
    await apply(tablePolicy(ME));
    await ok(['quarantine', 'add', CALLER.quarantined, '--reason', 'enforcement table']);
    try {
      await waitFor('the table policy and the quarantine at the agent', async () =>
        (await check(CALLER.audited, 'GET /v1/orders/7'))['decision'] === 'audit-would-deny' &&
        (await check(CALLER.quarantined, 'GET /v1/orders/7'))['reason'] === 'QUARANTINED' &&
        (await check(CALLER.web, 'DELETE /v1/orders/7'))['reason'] === 'NO_MATCHING_ALLOW'
          ? true
          : undefined,
      );
      for (const c of CASES) assertCheckAnswer(c, await check(c.from ?? '', `${c.method} ${c.path}`));
    } finally {
      await ok(['quarantine', 'remove', CALLER.quarantined]);
    }
  });
});
