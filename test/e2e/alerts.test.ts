/**
 * Alerts end to end (issue 15, section 3), real processes: a server (alerts webhook in its config),
 * an agent, `writ proxy` in front of an app and for three callers, curl through them. A new edge
 * into the enforce-mode destination raises an alert `writ alerts list` shows and the webhook
 * receiver gets signed (after a 500 it is retried); a burst of denies raises a deny-spike alert;
 * a response rule quarantines a new caller so its next call is refused, and `writ alerts undo`
 * lets it through again. Hostile input to the routes gets 4xx with codes.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
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
const DB = `${TD}/shop/sa/db`;
const WEB = `${TD}/shop/sa/web`;
const BATCH = `${TD}/shop/sa/batch`;
const SCANNER = `${TD}/ops/sa/scanner`;
const SECRET = 'an-alerts-hmac-key-of-enough-bytes';
const POLICY = `apiVersion: writ.dev/v1
kind: AccessPolicy
metadata: { name: db }
spec:
  to: ${DB}
  mode: enforce
  rules:
    - { name: shop, effect: allow, from: ["${TD}/shop/**"] }
---
apiVersion: writ.dev/v1
kind: AlertRule
metadata: { name: new-db-callers }
spec:
  kind: new-edge
  to: [${DB}]
---
apiVersion: writ.dev/v1
kind: AlertRule
metadata: { name: contain-batch }
spec:
  kind: new-edge
  from: [${BATCH}]
  to: [${DB}]
  respond: { quarantine: { ttl: 15m } }
---
apiVersion: writ.dev/v1
kind: AlertRule
metadata: { name: db-deny-spikes }
spec:
  kind: deny-spike
  to: [${DB}]
  params: { interval: 2s, minRequests: 20 }
`;

interface AlertJson {
  id: string;
  rule: string;
  kind: string;
  key: string;
  state: string;
  count: number;
  details: Record<string, unknown>;
  response: { quarantined: string; expiresAt: string | null; undoneAt: string | null; undoneBy: string | null } | null;
}

let srv: ServerProcess;
let agent: AgentProcess;
let app: Server;
let receiver: Server;
const hooks: Array<{ status: number; body: string; signature: string; event: string; id: string }> = [];
const proxies: ChildProcess[] = [];
const port: Record<string, number> = {};
let dir = '';

async function startProxy(args: string[]): Promise<ChildProcess> {
  const context = (): string =>
    `agent log:\n${agent.logs
      .filter((l) => !l.includes('"level":30'))
      .slice(-15)
      .join('\n')}`;
  const child = await startProxyProcess(agent.socket, args, { context });
  proxies.push(child);
  return child;
}

/** A GET through the caller's outbound proxy: [status, body] ('000' when the proxy would not connect). */
async function call(caller: string, path = '/'): Promise<[string, Record<string, unknown>]> {
  const r = await run('curl', ['-sS', '-m', '5', '-w', '\n%{http_code}', `http://127.0.0.1:${port[caller]}${path}`]);
  const lines = r.stdout.trim().split('\n');
  const status = lines.pop() ?? '000';
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(lines.join('\n') || '{}') as Record<string, unknown>;
  } catch {
    /* a proxy's plain-text answer */
  }
  return [status, body];
}

async function ok(args: string[]): Promise<string> {
  const r = await writ(srv, args);
  assert.equal(r.code, 0, `writ ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
const json = async <T>(args: string[]): Promise<T> => JSON.parse(await ok([...args, '-o', 'json'])) as T;
const alertsOf = (rule: string): Promise<AlertJson[]> => json<AlertJson[]>(['alerts', 'list', '--rule', rule]);

before(async () => {
  receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      // The first delivery fails: the deliverer must retry it.
      const status = hooks.length === 0 ? 500 : 204;
      hooks.push({
        status,
        body,
        signature: String(req.headers['x-writ-signature']),
        event: String(req.headers['x-writ-event']),
        id: String(req.headers['x-writ-event-id']),
      });
      res.statusCode = status;
      res.end();
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
  const { mkdtempSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  dir = mkdtempSync(join(tmpdir(), 'writ-alerts-'));
  writeFileSync(join(dir, 'hook.secret'), `${SECRET}\n`);
  writeFileSync(
    join(dir, 'server.yaml'),
    [
      'alerts:',
      '  maxQuarantinesPerHour: 5',
      '  webhook:',
      `    url: http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/alerts`,
      `    secretFile: ${join(dir, 'hook.secret')}`,
      '',
    ].join('\n'),
  );
  srv = await startServerProcess({ args: ['--config', join(dir, 'server.yaml')] });
  for (const id of [DB, WEB, BATCH, SCANNER])
    await ok(['entry', 'create', '--spiffe-id', id, '--parent-id', 'spiffe://e2e.test/writ/agent/alerts', '--selector', 'unix:uid:0']);
  const token = JSON.parse(await ok(['token', 'create', '--node-name', 'alerts', '-o', 'json'])).token as string;
  agent = await startAgentProcess(srv, { joinToken: token });
  await applyPolicy(srv, agent.dataDir, POLICY);
  app = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ peer: req.headers['x-writ-peer-id'] ?? null }));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
  const appPort = (app.address() as AddressInfo).port;
  await onFreePorts(1, ([p]) => ((port['db'] = p!), startProxy(['--spiffe-id', DB, '--inbound', `127.0.0.1:${p}=127.0.0.1:${appPort}`])));
  for (const [name, id] of [
    ['web', WEB],
    ['batch', BATCH],
    ['scanner', SCANNER],
  ] as const)
    await onFreePorts(1, ([p]) => ((port[name] = p!), startProxy(['--spiffe-id', id, '--outbound', `127.0.0.1:${p}=${DB}@127.0.0.1:${port['db']}`])));
});

after(async () => {
  for (const p of proxies) p.kill();
  app?.close();
  receiver?.close();
  await agent?.stop();
  await srv?.stop();
  cleanup(srv.dataDir);
  cleanup(agent.dataDir);
  cleanup(dir);
});

describe('alerts: rules over real decisions, the webhook, responses and undo', () => {
  it('a new edge into the enforce-mode destination is alerted on, listed, and delivered signed to the webhook after a retry', async () => {
    const [status] = await waitFor('web reaching db through the proxies', async () => {
      const r = await call('web');
      return r[0] === '200' ? r : undefined;
    });
    assert.equal(status, '200');
    const [a] = await waitFor('the new-edge alert', async () => {
      const l = await alertsOf('new-db-callers');
      return l.some((x) => x.key === `${WEB} -> ${DB}`) ? l.filter((x) => x.key === `${WEB} -> ${DB}`) : undefined;
    });
    assert.equal(a?.kind, 'new-edge');
    assert.equal(a?.state, 'open');
    assert.equal(a?.details['from'], WEB);
    assert.equal(a?.response, null);
    // More calls on a known edge are no new alert.
    await call('web');
    const table = await ok(['alerts', 'list', '--rule', 'new-db-callers']);
    assert.match(table, /^ID\s+RULE\s+KIND\s+KEY\s+COUNT\s+STATE/);
    assert.ok(table.includes(`${WEB} -> ${DB}`), table);
    assert.equal(table.trim().split('\n').length, 2, 'one alert for the edge');
    // The server log has it at warn.
    assert.ok(
      srv.logs.some((l) => l.includes('"msg":"alert"') && l.includes('"level":40') && l.includes(a!.id)),
      'logged at warn',
    );

    // The webhook: answered 500 first, delivered again, each body signed over its exact bytes.
    const delivered = await waitFor('the webhook delivery after a 500', async () => {
      const mine = hooks.filter((h) => h.id === a!.id);
      return mine.length >= 2 ? mine : undefined;
    });
    assert.deepEqual(
      delivered.map((h) => h.status),
      [500, 204],
    );
    for (const h of delivered) {
      assert.equal(h.event, 'alert');
      assert.equal(h.signature, `sha256=${createHmac('sha256', SECRET).update(h.body).digest('hex')}`);
      const body = JSON.parse(h.body) as AlertJson;
      assert.equal(body.id, a!.id);
      assert.equal(body.rule, 'new-db-callers');
      assert.equal(body.key, `${WEB} -> ${DB}`);
    }
  });

  it('a burst of denies on an edge raises a deny-spike alert with the rate and its z-score', async () => {
    for (let i = 0; i < 25; i++) {
      const [status, body] = await call('scanner');
      assert.equal(status, '403', `ops/scanner is not allowed into db: ${JSON.stringify(body)}`);
    }
    const [spike] = await waitFor('the deny-spike alert', async () => {
      const l = await alertsOf('db-deny-spikes');
      return l.length ? l : undefined;
    });
    assert.equal(spike?.kind, 'deny-spike');
    assert.equal(spike?.key, `${SCANNER} -> ${DB}`);
    assert.ok((spike?.details['denies'] as number) >= 20, JSON.stringify(spike?.details));
    assert.ok((spike?.details['z'] as number) >= 4, JSON.stringify(spike?.details));
  });

  it('a response rule quarantines the new caller so its next call is refused; writ alerts undo lets it through again', async () => {
    const [first] = await call('batch');
    assert.equal(first, '200', 'the first call passes: the alert comes from its reported decision');
    const [a] = await waitFor('the contain-batch alert and its quarantine', async () => {
      const l = await alertsOf('contain-batch');
      return l[0]?.response ? l : undefined;
    });
    assert.equal(a?.response?.quarantined, BATCH);
    assert.ok(a?.response?.expiresAt, 'with the TTL');
    const q = await json<Array<{ spiffeId: string; createdBy: string }>>(['quarantine', 'list']);
    assert.deepEqual(
      q.map((x) => [x.spiffeId, x.createdBy]),
      [[BATCH, 'alert-rule:contain-batch']],
    );
    await waitFor('batch refused while quarantined', async () => ((await call('batch'))[0] !== '200' ? true : undefined));
    assert.equal((await call('web'))[0], '200', 'others still pass');

    const undo = await writ(srv, ['alerts', 'undo', a!.id]);
    assert.equal(undo.code, 0, undo.stderr);
    assert.match(undo.stderr, new RegExp(`lifted the quarantine of ${BATCH}`));
    await waitFor('batch let through after the undo', async () => ((await call('batch'))[0] === '200' ? true : undefined));
    const [after] = await alertsOf('contain-batch');
    assert.equal(after?.response?.undoneBy, 'admin');
    assert.equal(after?.count, 1, 'the calls since are on a known edge');
  });

  it('ack takes an alert off the open list; hostile input to the routes is refused with codes', async () => {
    const [a] = await alertsOf('new-db-callers');
    const acked = await json<AlertJson>(['alerts', 'ack', a!.id]);
    assert.equal(acked.state, 'acked');
    const open = await json<AlertJson[]>(['alerts', 'list', '--state', 'open']);
    assert.ok(!open.some((x) => x.id === a!.id));
    const ackedList = await json<AlertJson[]>(['alerts', 'list', '--state', 'acked']);
    assert.ok(ackedList.some((x) => x.id === a!.id));

    const noResponse = await writ(srv, ['alerts', 'undo', a!.id]);
    assert.equal(noResponse.code, 1);
    assert.match(noResponse.stderr, /ERR_ALERT_NO_RESPONSE/);
    const missing = await writ(srv, ['alerts', 'ack', '00000000-0000-0000-0000-000000000000']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /ERR_NOT_FOUND/);
    const badId = await writ(srv, ['alerts', 'ack', 'no such id!']);
    assert.match(badId.stderr, /ERR_FIELD_INVALID/);
    const badState = await writ(srv, ['alerts', 'list', '--state', 'closed']);
    assert.equal(badState.code, 2, 'a usage error');
    const tooMany = await writ(srv, ['alerts', 'list', '--limit', '100000']);
    assert.equal(tooMany.code, 1);
    assert.match(tooMany.stderr, /ERR_FIELD_INVALID/);
    // A rule that cannot be applied is refused with its line.
    const f = join(dir, 'bad-rule.yaml');
    writeFileSync(f, 'apiVersion: writ.dev/v1\nkind: AlertRule\nmetadata: { name: x }\nspec:\n  kind: key-expiry\n  respond: { quarantine: { ttl: 15m } }\n');
    const bad = await writ(srv, ['policy', 'apply', '-f', f]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /bad-rule\.yaml:6:\d+.*key-expiry names no identity/s);
  });
});
