/** Policies through the CLI and API: tests for CI, apply with revisions, diff, rollback, checks. */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanup, run, startAgentProcess, startServerProcess, waitFor, writ, type AgentProcess, type ServerProcess } from './helpers.ts';

let srv: ServerProcess;
let dir: string;
const ORDERS = (pathPattern: string) => `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: orders-api }
spec:
  to: spiffe://e2e.test/ns/orders/sa/api
  rules:
    - effect: allow
      from: [spiffe://e2e.test/ns/web/**]
      actions: [{ methods: [GET], paths: ["${pathPattern}"] }]
    - effect: deny
      from: [spiffe://e2e.test/ns/legacy/*]
`;
const REPORTS = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: reports }
spec:
  to: spiffe://e2e.test/ns/reports/**
  mode: audit
  rules:
    - { effect: allow, from: [spiffe://e2e.test/ns/bi/*] }
`;

before(async () => {
  srv = await startServerProcess();
  dir = mkdtempSync(join(tmpdir(), 'writ-policy-'));
});
after(async () => {
  await srv.stop();
  cleanup(srv.dataDir);
  cleanup(dir);
});

describe('writ policy test (offline, for CI)', () => {
  it('passes with exit 0 and fails with exit 3, naming the case', async () => {
    const f = join(dir, 'suite.yaml');
    const cases = (expectDelete: string) => `${ORDERS('/v1/orders/*')}---
kind: PolicyTest
cases:
  - { name: web reads an order, from: spiffe://e2e.test/ns/web/sa/frontend, to: spiffe://e2e.test/ns/orders/sa/api, action: GET /v1/orders/7, expect: allow }
  - { name: web cannot delete, from: spiffe://e2e.test/ns/web/sa/frontend, to: spiffe://e2e.test/ns/orders/sa/api, action: DELETE /v1/orders/7, expect: ${expectDelete} }
  - { name: legacy denied, from: spiffe://e2e.test/ns/legacy/app, to: spiffe://e2e.test/ns/orders/sa/api, action: tcp 5432, expect: deny }
`;
    writeFileSync(f, cases('deny'));
    const ok = await writ(undefined, ['policy', 'test', f]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^3 passed, 0 failed$/m);
    writeFileSync(f, cases('allow'));
    const bad = await writ(undefined, ['policy', 'test', f]);
    assert.equal(bad.code, 3);
    assert.match(bad.stdout, /FAIL {2}web cannot delete: expected allow, got deny \(NO_MATCHING_ALLOW\)/);
    assert.match(bad.stdout, /^2 passed, 1 failed$/m);
  });
});

describe('policies on the server', () => {
  it('refuses an invalid file with every problem and its line, applies nothing', async () => {
    const f = join(dir, 'bad.yaml');
    writeFileSync(
      f,
      ORDERS('/v1/orders/*').replace('effect: deny', 'effect: deny\n      colour: red').replace('spiffe://e2e.test/ns/web/**', 'spiffe://e2e.test/ns/web/.*'),
    );
    const r = await writ(srv, ['policy', 'apply', '-f', f]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`${f.replace(/[/.]/g, '\\$&')}:8:\\d+: rules\\[0\\]\\.from\\[0\\]`));
    assert.match(r.stderr, /:11:\d+: unknown field "colour"/);
    assert.match(r.stderr, /ERR_POLICY_INVALID/);
    assert.equal(JSON.parse((await writ(srv, ['policy', 'list', '-o', 'json'])).stdout).revision, 0);
  });

  it('apply creates revisions; list, get, history, diff, rollback and delete work; checks explain', async () => {
    const f = join(dir, 'p.yaml');
    writeFileSync(f, `${ORDERS('/v1/orders/*')}---\n${REPORTS}`);
    const dry = await writ(srv, ['policy', 'apply', '-f', f, '--dry-run']);
    assert.match(dry.stdout, /^dry run: revision 0; would change: orders-api, reports$/m);
    assert.match((await writ(srv, ['policy', 'apply', '-f', f, '--comment', 'first'])).stdout, /^revision 1; changed: orders-api, reports$/m);
    assert.match((await writ(srv, ['policy', 'apply', '-f', f])).stdout, /^revision 1; no change$/m);
    writeFileSync(f, ORDERS('/v1/orders/**'));
    assert.match((await writ(srv, ['policy', 'apply', '-f', f])).stdout, /^revision 2; changed: orders-api$/m);
    const list = await writ(srv, ['policy', 'list']);
    assert.match(list.stdout, /orders-api\s+spiffe:\/\/e2e\.test\/ns\/orders\/sa\/api\s+enforce\s+2/);
    assert.match((await writ(srv, ['policy', 'get', 'orders-api'])).stdout, /paths: \["\/v1\/orders\/\*\*"\]/);
    assert.match((await writ(srv, ['policy', 'get', 'orders-api', '--revision', '1'])).stdout, /paths: \["\/v1\/orders\/\*"\]/);
    const diff = await writ(srv, ['policy', 'diff', '1', '2']);
    assert.match(diff.stdout, /^changed orders-api$/m);
    assert.match(diff.stdout, /^ {2}-.*\/v1\/orders\/\*"\]/m);
    assert.match(diff.stdout, /^ {2}\+.*\/v1\/orders\/\*\*"\]/m);

    const check = async (from: string, action: string) =>
      JSON.parse((await writ(srv, ['authz', 'check', '--from', from, '--to', 'spiffe://e2e.test/ns/orders/sa/api', '--action', action, '-o', 'json'])).stdout);
    const a = await check('spiffe://e2e.test/ns/web/sa/frontend', 'GET /v1/orders/7/items');
    assert.equal(a.decision, 'allow');
    assert.equal(a.rule.name, 'orders-api#0');
    assert.equal(a.revision, 2);
    const d = await check('spiffe://e2e.test/ns/web/sa/frontend', 'POST /v1/orders');
    assert.equal(d.decision, 'deny');
    assert.deepEqual(d.nearest[0].mismatched, ['action']);
    const table = await writ(srv, [
      'authz',
      'check',
      '--from',
      'spiffe://e2e.test/ns/legacy/x',
      '--to',
      'spiffe://e2e.test/ns/orders/sa/api',
      '--action',
      'GET /',
    ]);
    assert.match(table.stdout, /^DENY \(DENY_RULE\) at policy revision 2\n {2}decided by rule orders-api#1 \(policy orders-api, line \d+\)$/m);

    assert.match((await writ(srv, ['policy', 'rollback', '1'])).stdout, /^restored revision 1 as revision 3$/m);
    assert.equal(
      (await check('spiffe://e2e.test/ns/web/sa/frontend', 'GET /v1/orders/7/items')).decision,
      'deny',
      'the rolled-back pattern is one segment again',
    );
    assert.equal((await writ(srv, ['policy', 'delete', 'reports'])).code, 0);
    const hist = JSON.parse((await writ(srv, ['policy', 'history', '-o', 'json'])).stdout);
    assert.deepEqual(
      hist.map((h: { revision: number }) => h.revision),
      [4, 3, 2, 1],
    );
    assert.equal(hist[3].comment, 'first');
    assert.deepEqual(hist[0].policies, ['orders-api']);
  });

  it('hostile policy documents get a 4xx, never a 500', async () => {
    const post = (yaml: string) =>
      run(
        'curl',
        [
          '-sS',
          '--cacert',
          join(srv.dataDir, 'bundle.pem'),
          '-H',
          `Authorization: Bearer ${srv.adminToken}`,
          '-H',
          'content-type: application/json',
          '--data-binary',
          '@-',
          '-w',
          '\n%{http_code}',
          `${srv.url}/v1/policies`,
        ],
        { input: JSON.stringify({ yaml }) },
      );
    for (const [yaml, status] of [
      ['['.repeat(50_000), '400'],
      ['a: &a [*a, *a]\n', '400'],
      ['kind: AccessPolicy\n'.repeat(3), '400'],
      ['x'.repeat(6 * 1024 * 1024), '413'],
      [ORDERS('/v1/orders/*').replace('GET', 'FETCH'), '400'],
    ] as const) {
      const r = await post(yaml);
      assert.equal(r.stdout.trim().split('\n').pop(), status, r.stdout.slice(0, 300));
    }
  });
});

describe('policy status with real agents (what `--wait` waits on)', () => {
  interface Status {
    revision: number;
    quarantineVersion: number;
    agents: Array<{ spiffeId: string; revision: number; behind: number; quarantineVersion: number; ackedAt: string | null; live: boolean }>;
  }
  const status = async (): Promise<Status> => {
    const r = await writ(srv, ['policy', 'status', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Status;
  };
  const mine = (s: Status, ids: readonly string[]) => s.agents.filter((a) => ids.includes(a.spiffeId));

  it('after a quarantine and its lifting, and a policy apply, every live agent shows the new version', async () => {
    const agents: AgentProcess[] = [];
    const ids: string[] = [];
    try {
      for (const node of ['status-a', 'status-b']) {
        const tok = JSON.parse((await writ(srv, ['token', 'create', '--node-name', node, '-o', 'json'])).stdout).token as string;
        agents.push(await startAgentProcess(srv, { joinToken: tok }));
        ids.push(`spiffe://e2e.test/writ/agent/${node}`);
      }
      // Both agents acknowledged what they enforce on their first sync.
      const start = await waitFor('both agents live', async () => {
        const s = await status();
        return mine(s, ids).filter((a) => a.live && a.quarantineVersion === s.quarantineVersion && a.behind === 0).length === 2 ? s : undefined;
      });
      const add = await writ(srv, ['quarantine', 'add', 'spiffe://e2e.test/ns/status/compromised', '--reason', 'status test']);
      assert.equal(add.code, 0, add.stderr);
      const quarantined = await waitFor('every live agent at the new quarantine version', async () => {
        const s = await status();
        return s.quarantineVersion > start.quarantineVersion && mine(s, ids).every((a) => a.live && a.quarantineVersion === s.quarantineVersion)
          ? s
          : undefined;
      });
      assert.equal(mine(quarantined, ids).length, 2);
      const lifted = await writ(srv, ['quarantine', 'remove', 'spiffe://e2e.test/ns/status/compromised']);
      assert.equal(lifted.code, 0, lifted.stderr);
      // Versions only grow: `--wait` asks "at or past the version after my change".
      await waitFor('every live agent at the version of the lifting', async () => {
        const s = await status();
        return s.quarantineVersion > quarantined.quarantineVersion && mine(s, ids).every((a) => a.quarantineVersion === s.quarantineVersion) ? s : undefined;
      });
      const f = join(dir, 'status.yaml');
      writeFileSync(f, REPORTS.replace('name: reports', 'name: status-reports'));
      assert.equal((await writ(srv, ['policy', 'apply', '-f', f])).code, 0);
      const applied = await waitFor('every live agent at the new revision', async () => {
        const s = await status();
        return s.revision > start.revision && mine(s, ids).every((a) => a.revision === s.revision && a.behind === 0) ? s : undefined;
      });
      assert.ok(mine(applied, ids).every((a) => a.live && a.ackedAt !== null));
    } finally {
      for (const a of agents) {
        await a.stop();
        cleanup(a.dataDir);
      }
    }
  });

  it('an agent that stops (SIGTERM) or dies (SIGKILL) is not live at once, and `policy apply --wait` does not wait for it', async () => {
    const agents: AgentProcess[] = [];
    const ids: string[] = [];
    try {
      for (const node of ['gone-term', 'gone-kill']) {
        const tok = JSON.parse((await writ(srv, ['token', 'create', '--node-name', node, '-o', 'json'])).stdout).token as string;
        agents.push(await startAgentProcess(srv, { joinToken: tok }));
        ids.push(`spiffe://e2e.test/writ/agent/${node}`);
      }
      await waitFor('both agents live', async () =>
        (await status()).agents.filter((a) => ids.includes(a.spiffeId) && a.live).length === 2 ? true : undefined,
      );
      await agents[0]!.stop();
      agents[1]!.child.kill('SIGKILL');
      await new Promise((r) => agents[1]!.child.once('exit', r));
      const gone = await waitFor('both agents no longer live', async () => {
        const s = mine(await status(), ids);
        return s.length === 2 && s.every((a) => !a.live) ? s : undefined;
      });
      // Their acknowledgements are recent: liveness did not wait out the 90 s acknowledgement age.
      for (const a of gone) assert.ok(a.ackedAt !== null && Date.now() - Date.parse(a.ackedAt) < 90_000, `${a.spiffeId} acked at ${a.ackedAt}`);
      const f = join(dir, 'gone.yaml');
      writeFileSync(f, REPORTS.replace('name: reports', 'name: gone-reports'));
      const r = await writ(srv, ['policy', 'apply', '-f', f, '--wait=60s']);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /gone-term|gone-kill/, 'a stopped agent is neither waited for nor a straggler');
      assert.match(r.stderr, /^acknowledged by /m);
    } finally {
      for (const a of agents) {
        if (a.child.exitCode === null && a.child.signalCode === null) await a.stop();
        cleanup(a.dataDir);
      }
    }
  });
});
