/** A quarantine with a TTL lifts itself end to end: the workload's SVID stream ends, then comes back once the TTL passes. */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { WorkloadClient } from '@writ/sdk';
import { cleanup, startAgentProcess, startServerProcess, waitFor, writ, type AgentProcess, type ServerProcess } from './helpers.ts';

const ME = 'spiffe://e2e.test/ns/ttl/sa/worker';
let srv: ServerProcess;
let agent: AgentProcess;

before(async () => {
  srv = await startServerProcess();
  const e = await writ(srv, [
    'entry',
    'create',
    '--spiffe-id',
    ME,
    '--parent-id',
    'spiffe://e2e.test/writ/agent/qt',
    '--selector',
    `unix:uid:${process.getuid!()}`,
  ]);
  assert.equal(e.code, 0, e.stderr);
  const t = await writ(srv, ['token', 'create', '--node-name', 'qt', '-o', 'json']);
  assert.equal(t.code, 0, t.stderr);
  agent = await startAgentProcess(srv, { joinToken: JSON.parse(t.stdout).token as string });
});
after(async () => {
  await agent?.stop();
  await srv?.stop();
  if (agent) cleanup(agent.dataDir);
  if (srv) cleanup(srv.dataDir);
});

it('quarantine --ttl 2s: the SVID stream ends with PermissionDenied, and the identity is served again once the TTL has passed', async () => {
  const c = new WorkloadClient(`unix://${agent.socket}`);
  const updates: Array<{ at: number; ids: string[] }> = [];
  const errors: string[] = [];
  const stop = c.watchX509Context(
    (ctx) => updates.push({ at: Date.now(), ids: ctx.svids.map((s) => s.spiffeId) }),
    (err) => errors.push(err.message),
  );
  try {
    await waitFor('the first SVID', async () => (updates.some((u) => u.ids.includes(ME)) ? true : undefined));
    const q = await writ(srv, ['quarantine', 'add', ME, '--reason', 'incident 7', '--ttl', '2s', '-o', 'json']);
    assert.equal(q.code, 0, q.stderr);
    const expiresAt = Date.parse((JSON.parse(q.stdout) as { expiresAt: string }).expiresAt);
    assert.ok(Number.isFinite(expiresAt), q.stdout);
    await waitFor('the stream to end with PermissionDenied', async () => (errors.some((e) => /PERMISSION_DENIED/.test(e)) ? true : undefined));
    const seenBefore = updates.length;
    // Nobody lifts it: the TTL does. The watcher's own retries get the identity back.
    const back = await waitFor('the identity back on the stream', async () => updates.slice(seenBefore).find((u) => u.ids.includes(ME)), 30_000);
    assert.ok(back.at >= expiresAt, `served again ${expiresAt - back.at} ms before the quarantine expired`);
    const list = await writ(srv, ['quarantine', 'list', '-o', 'json']);
    assert.equal(list.code, 0, list.stderr);
    assert.doesNotMatch(list.stdout, /ns\/ttl/, 'the quarantine is no longer listed');
  } finally {
    stop();
    c.close();
  }
});
